//! Records the git commit the proxy is built from (`ringway_build_info` in `/metrics`), when
//! the source is a git checkout; otherwise the metric says "unknown".

use std::process::Command;

fn main() {
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(h) = hash {
        println!("cargo:rustc-env=RINGWAY_GIT_HASH={h}");
    }
    // A new commit moves HEAD (or the branch it points to): build again to record it.
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
