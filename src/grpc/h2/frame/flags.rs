//! Frame flags (RFC 9113 §4.1, §6). The flag byte of a header is [`Flags`]; what its bits
//! mean depends on the frame type, so each type reads it through its own newtype
//! (`DataFlags`, `HeadersFlags`, …) whose `Debug` prints the names of the bits that are set:
//! a trace reads `DATA stream=3 len=5 END_STREAM`, not `0x1`.

use std::fmt;

use super::kind;

/// The raw flag byte of a frame header.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    pub const NONE: Flags = Flags(0);

    /// Any byte, as read from the wire (unknown bits are kept and ignored).
    pub const fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Writes the names of the bits set, as the frame type `kind` defines them.
    pub fn fmt_for(self, kind: u8, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match kind {
            kind::DATA => fmt::Debug::fmt(&DataFlags(self.0), f),
            kind::HEADERS => fmt::Debug::fmt(&HeadersFlags(self.0), f),
            kind::SETTINGS | kind::PING => fmt::Debug::fmt(&AckFlags(self.0), f),
            kind::CONTINUATION => fmt::Debug::fmt(&ContinuationFlags(self.0), f),
            kind::PUSH_PROMISE => fmt::Debug::fmt(&PushPromiseFlags(self.0), f),
            _ if self.0 == 0 => Ok(()),
            _ => write!(f, "flags=0x{:x}", self.0),
        }
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags(0x{:x})", self.0)
    }
}

/// One flag newtype per frame type: its bits as associated constants, a test and a setter per
/// bit, conversion from and to the raw byte, and a `Debug` that names the bits that are set.
macro_rules! frame_flags {
    ($(#[$doc:meta])* $name:ident { $($(#[$bdoc:meta])* $bit:ident = $value:expr => $is:ident, $set:ident;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(u8);

        impl $name {
            $($(#[$bdoc])* pub const $bit: $name = $name($value);)*

            pub const fn empty() -> $name {
                $name(0)
            }

            /// Whether every bit of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// `self` with the bits of `other` set when `on`.
            #[must_use]
            pub const fn with(self, other: $name, on: bool) -> $name {
                if on { $name(self.0 | other.0) } else { self }
            }

            $(
                pub const fn $is(self) -> bool {
                    self.contains($name::$bit)
                }
                pub fn $set(&mut self) {
                    self.0 |= $value;
                }
            )*
        }

        impl From<Flags> for $name {
            fn from(f: Flags) -> $name {
                $name(f.bits())
            }
        }

        impl From<$name> for Flags {
            fn from(f: $name) -> Flags {
                Flags::from_bits(f.0)
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                $(
                    if self.$is() {
                        f.write_str(if first { "" } else { " | " })?;
                        f.write_str(stringify!($bit))?;
                        first = false;
                    }
                )*
                let unknown = self.0 & !(0 $(| $value)*);
                if unknown != 0 {
                    write!(f, "{}0x{:x}", if first { "" } else { " | " }, unknown)?;
                } else if first {
                    f.write_str("(none)")?;
                }
                Ok(())
            }
        }
    };
}

frame_flags! {
    /// Flags of a DATA frame.
    DataFlags {
        /// The sender's last frame on this stream.
        END_STREAM = 0x1 => is_end_stream, set_end_stream;
        /// A pad length leads the payload.
        PADDED = 0x8 => is_padded, set_padded;
    }
}

frame_flags! {
    /// Flags of a HEADERS frame.
    HeadersFlags {
        /// The sender's last frame on this stream (the header block may still continue).
        END_STREAM = 0x1 => is_end_stream, set_end_stream;
        /// No CONTINUATION follows: the header block is whole.
        END_HEADERS = 0x4 => is_end_headers, set_end_headers;
        /// A pad length leads the payload.
        PADDED = 0x8 => is_padded, set_padded;
        /// A stream dependency and weight lead the fragment.
        PRIORITY = 0x20 => is_priority, set_priority;
    }
}

frame_flags! {
    /// Flags of a SETTINGS or PING frame.
    AckFlags {
        /// This frame acknowledges the peer's.
        ACK = 0x1 => is_ack, set_ack;
    }
}

frame_flags! {
    /// Flags of a CONTINUATION frame.
    ContinuationFlags {
        /// The header block is whole.
        END_HEADERS = 0x4 => is_end_headers, set_end_headers;
    }
}

frame_flags! {
    /// Flags of a PUSH_PROMISE frame.
    PushPromiseFlags {
        /// The header block is whole.
        END_HEADERS = 0x4 => is_end_headers, set_end_headers;
        /// A pad length leads the payload.
        PADDED = 0x8 => is_padded, set_padded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_bits_that_are_set() {
        assert_eq!(format!("{:?}", DataFlags::END_STREAM), "END_STREAM");
        assert_eq!(format!("{:?}", HeadersFlags::END_STREAM | HeadersFlags::END_HEADERS), "END_STREAM | END_HEADERS");
        assert_eq!(format!("{:?}", DataFlags::empty()), "(none)");
        assert_eq!(format!("{:?}", AckFlags::from(Flags::from_bits(0x1))), "ACK");
        // The same bit means END_STREAM on DATA and ACK on PING; unknown bits are shown raw.
        assert_eq!(format!("{:?}", DataFlags::from(Flags::from_bits(0x41))), "END_STREAM | 0x40");
        assert_eq!(format!("{:?}", ContinuationFlags::from(Flags::from_bits(0x1))), "0x1");
    }

    #[test]
    fn bits_read_and_set_by_name() {
        let mut f = HeadersFlags::empty().with(HeadersFlags::END_STREAM, true).with(HeadersFlags::PADDED, false);
        assert!(f.is_end_stream() && !f.is_padded() && !f.is_end_headers());
        f.set_end_headers();
        assert_eq!(Flags::from(f).bits(), 0x5);
        assert!(HeadersFlags::from(Flags::from_bits(0x2c)).contains(HeadersFlags::PADDED | HeadersFlags::PRIORITY));
    }
}
