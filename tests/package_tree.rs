//! The proxy package links no tokio, hyper, tonic or h2: those belong to the measuring kit
//! (`bench/`, `ringway-bench`) and the tests. Checked from the manifest and the lock file
//! (what `cargo tree -e normal -p ringway` shows, without running cargo): the proxy's normal
//! dependencies, then everything they depend on, transitively.

use std::collections::{BTreeSet, HashMap};

const FORBIDDEN: &[&str] = &["tokio", "hyper", "hyper-util", "tonic", "h2"];

#[test]
fn the_proxy_package_depends_on_no_tokio_hyper_tonic_or_h2() {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest: toml::Table = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap().parse().unwrap();
    let lock: toml::Table = std::fs::read_to_string(format!("{root}/Cargo.lock")).unwrap().parse().unwrap();

    // name -> the names its lock entry depends on (a lock entry may say "name version").
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for p in lock["package"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let list = p.get("dependencies").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        let names = list.iter().map(|d| d.as_str().unwrap().split(' ').next().unwrap().to_string());
        deps.entry(name).or_default().extend(names);
    }

    // The proxy's normal dependencies (not dev-dependencies), as the lock names them.
    let normal: Vec<String> = manifest["dependencies"].as_table().unwrap().keys().cloned().collect();
    assert!(normal.contains(&"monoio".to_string()), "read the proxy's [dependencies]: {normal:?}");
    let mut seen = BTreeSet::new();
    let mut todo = normal;
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            todo.extend(deps.get(&n).cloned().unwrap_or_default());
        }
    }
    let bad: Vec<&String> = seen.iter().filter(|n| FORBIDDEN.contains(&n.as_str())).collect();
    assert!(bad.is_empty(), "the proxy's dependency tree has {bad:?}");
    assert!(!seen.contains("ringway-bench"), "the proxy must not depend on its measuring kit");

    // The kit does use them: the check would see them if they came back.
    let mut kit = BTreeSet::new();
    let mut todo = vec!["ringway-bench".to_string()];
    while let Some(n) = todo.pop() {
        if kit.insert(n.clone()) {
            todo.extend(deps.get(&n).cloned().unwrap_or_default());
        }
    }
    assert!(kit.contains("tokio") && kit.contains("tonic"), "the kit's tree, for contrast: {kit:?}");
}
