//! Validation helpers shared by every part of the config (and by each protocol's listener
//! section): problems are collected with their key paths, all at once, and each value is
//! checked against the range its key allows.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

use super::units::{parse_byte_size, parse_duration, ByteSize};

/// A value written as a number or as a string (`workers = 4` or `"auto"`; `4096` or `"4KiB"`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum StrOrInt {
    Int(i64),
    Str(String),
}

/// Collects problems with their key paths.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

/// The usual range of a byte-size limit, and how a problem names it.
pub const SIZE_RANGE: (RangeInclusive<usize>, &str) = (64..=0x4000_0000, "64..=1GiB");

impl Problems {
    pub fn add(&mut self, path: impl std::fmt::Display, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    /// A duration greater than zero.
    pub fn duration(&mut self, path: String, v: &Option<String>, default: &str) -> Duration {
        match parse_duration(v.as_deref().unwrap_or(default)) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, e);
                Duration::from_secs(1)
            }
        }
    }

    /// A byte size within `range` (named `range_text` in the problem), `default` when absent.
    pub fn byte_size(
        &mut self,
        path: String,
        v: &Option<StrOrInt>,
        default: usize,
        (range, range_text): (RangeInclusive<usize>, &str),
    ) -> ByteSize {
        let n = match v {
            None => return ByteSize(default),
            Some(StrOrInt::Int(n)) => usize::try_from(*n).map_err(|_| format!("{n} is negative")),
            Some(StrOrInt::Str(s)) => parse_byte_size(s),
        };
        match n {
            Ok(n) if range.contains(&n) => ByteSize(n),
            Ok(n) => {
                self.add(path, format!("{n} is out of range {range_text}"));
                ByteSize(default)
            }
            Err(e) => {
                self.add(path, e);
                ByteSize(default)
            }
        }
    }

    /// A count in 0..=max (`what_zero_means` is said in the error, e.g. "0: off").
    pub fn count(&mut self, path: String, v: Option<i64>, default: u32, max: u32, what_zero_means: &str) -> u32 {
        match v {
            None => default,
            Some(n) if (0..=i64::from(max)).contains(&n) => n as u32,
            Some(n) => {
                self.add(path, format!("{n} is out of range 0..={max}{what_zero_means}"));
                default
            }
        }
    }

    /// A count in 1..=max.
    pub fn positive(&mut self, path: String, v: Option<i64>, default: usize, max: usize) -> usize {
        match v {
            None => default,
            Some(n) if n >= 1 && n as u64 <= max as u64 => n as usize,
            Some(n) => {
                self.add(path, format!("{n} is out of range 1..={max}"));
                default
            }
        }
    }
}

/// The keys of one protocol's section of a listener (everything but the keys every listener
/// has), read one by one so each problem names its key path.
pub struct Section<'a> {
    table: &'a toml::Table,
    /// `listener[i]`
    path: &'a str,
}

impl<'a> Section<'a> {
    pub fn new(table: &'a toml::Table, path: &'a str) -> Self {
        Section { table, path }
    }

    /// The key path of `key`.
    pub fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// Reports every key not in `keys` (naming the protocol that has it, if one does).
    pub fn refuse_unknown(&self, p: &mut Problems, protocol: &str, keys: &[&str], others: &[(&str, &[&str])]) {
        for k in self.table.keys() {
            if keys.contains(&k.as_str()) {
                continue;
            }
            match others.iter().find(|(_, ks)| ks.contains(&k.as_str())) {
                Some((other, _)) => {
                    p.add(self.path(k), format!("is a {other} listener key; this listener's protocol is {protocol}"))
                }
                None => p.add(self.path(k), format!("unknown key for a {protocol} listener")),
            }
        }
    }

    /// An integer key.
    pub fn int(&self, p: &mut Problems, key: &str) -> Option<i64> {
        match self.table.get(key)? {
            toml::Value::Integer(n) => Some(*n),
            other => {
                p.add(self.path(key), format!("expected an integer, found {}", other.type_str()));
                None
            }
        }
    }

    /// A size key: an integer or a string with a unit.
    pub fn size(&self, p: &mut Problems, key: &str) -> Option<StrOrInt> {
        match self.table.get(key)? {
            toml::Value::Integer(n) => Some(StrOrInt::Int(*n)),
            toml::Value::String(s) => Some(StrOrInt::Str(s.clone())),
            other => {
                p.add(self.path(key), format!("expected a size (e.g. \"4MiB\"), found {}", other.type_str()));
                None
            }
        }
    }

    /// A string key (durations).
    pub fn string(&self, p: &mut Problems, key: &str) -> Option<String> {
        match self.table.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                p.add(self.path(key), format!("expected a string (e.g. \"30s\"), found {}", other.type_str()));
                None
            }
        }
    }
}
