//! The hpack-test-case stories in tests/fixtures/hpack-test-case (see the README there):
//! blocks from other encoders must decode to the published lists, in sequence through one
//! decoder per story, and our encoder's blocks for the same lists must decode back to them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ringway::grpc::h2::hpack::{Decoder, Encoder};
use serde::Deserialize;

use super::{decode, encode, hex, Owned};

#[derive(Deserialize)]
struct Story {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    /// SETTINGS_HEADER_TABLE_SIZE in force from this case on, when it changes.
    header_table_size: Option<usize>,
    wire: String,
    /// One single-entry object per field, in order.
    headers: Vec<BTreeMap<String, String>>,
}

impl Case {
    fn list(&self) -> Owned {
        self.headers
            .iter()
            .flat_map(|h| h.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec(), false)))
            .collect()
    }
}

/// Every story_NN.json under the fixture directory, sorted by path.
fn stories() -> Vec<(PathBuf, Story)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hpack-test-case");
    let mut paths = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "json") {
                    paths.push(f);
                }
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let story = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, story)
        })
        .collect()
}

/// Drops never_indexed: the corpus does not record it.
fn names_values(list: Owned) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.into_iter().map(|(n, v, _)| (n, v)).collect()
}

#[test]
fn the_fixture_set_is_what_the_readme_says() {
    let stories = stories();
    let dirs: std::collections::BTreeSet<_> =
        stories.iter().map(|(p, _)| p.parent().unwrap().file_name().unwrap().to_owned()).collect();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    assert_eq!(stories.len(), 10);
    let cases: usize = stories.iter().map(|(_, s)| s.cases.len()).sum();
    assert_eq!(cases, 3 + 2 + 10 + 3 + 3 + 2 + 33 + 3 + 2 + 10);
}

#[test]
fn other_encoders_blocks_decode_to_the_published_lists() {
    for (path, story) in stories() {
        let mut d = Decoder::new(4096);
        for (i, case) in story.cases.iter().enumerate() {
            if let Some(size) = case.header_table_size {
                d.set_max_table_size(size);
            }
            let got = decode(&mut d, &hex(&case.wire));
            assert_eq!(names_values(got), names_values(case.list()), "{} case {i}", path.display());
        }
    }
}

#[test]
fn our_encoder_round_trips_the_story_lists() {
    for (path, story) in stories() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let mut wire = 0;
        let mut plain = 0;
        for (i, case) in story.cases.iter().enumerate() {
            if let Some(size) = case.header_table_size {
                e.set_max_table_size(size);
                d.set_max_table_size(size);
            }
            let list = case.list();
            let block = encode(&mut e, &list);
            assert_eq!(decode(&mut d, &block), list, "{} case {i}", path.display());
            assert_eq!(e.table_size(), d.table_size(), "{} case {i}", path.display());
            wire += block.len();
            plain += list.iter().map(|(n, v, _)| n.len() + v.len()).sum::<usize>();
        }
        // A sanity bound, not a target: indexing plus Huffman must beat the raw octets.
        assert!(wire < plain, "{}: {wire} octets for {plain} plain", path.display());
    }
}
