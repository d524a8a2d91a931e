//! The `counters!` macro: a struct of per-worker counters (plain `Cell`s, no atomics), the
//! copy of it that crosses threads, and the sums and `name=value` pairs of those copies.

/// `counters! { Name / NameSnapshot, "prefix_" { /// doc \n field, ... } }`
macro_rules! counters {
    ($(#[$sdoc:meta])* $name:ident / $snap:ident, $prefix:literal { $($(#[$doc:meta])* $field:ident),* $(,)? }) => {
        $(#[$sdoc])*
        #[derive(Default, Debug)]
        pub struct $name { $($(#[$doc])* pub $field: std::cell::Cell<u64>,)* }

        /// A copy of the counters that can cross threads.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $snap { $($(#[$doc])* pub $field: u64,)* }

        impl $name {
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.get(),)* }
            }
        }

        impl $snap {
            /// Adds another worker's counters to these.
            pub fn add(&mut self, o: &$snap) {
                $(self.$field += o.$field;)*
            }

            /// `name=value` pairs for the log.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((concat!($prefix, stringify!($field)), self.$field),)*]
            }
        }
    };
}

pub(crate) use counters;
