//! Replays every committed fuzz input through its target (`src/fuzzing.rs`) on the normal
//! build: the seeds (`fuzz/seeds/`), the corpus the fuzzers grew (`fuzz/corpus/`), and every
//! input that once crashed a target (`fuzz/regressions/`). Fast and deterministic, so CI runs
//! it on every change; the fuzzing itself is `scripts/fuzz.sh` (docs/reliability.md).

use std::path::Path;

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, run) in ringway::fuzzing::TARGETS {
        let mut inputs = 0;
        for dir in ["seeds", "corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
            let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for file in files {
                // (A fuzzer running here meanwhile may have removed an input it reduced.)
                let Ok(data) = std::fs::read(&file) else { continue };
                if let Err(e) = std::panic::catch_unwind(|| run(&data)) {
                    panic!("{target}: {} fails: {e:?}", file.display());
                }
                inputs += 1;
            }
        }
        assert!(inputs > 0, "{target}: no committed inputs (run fuzz/seeds.py)");
    }
}
