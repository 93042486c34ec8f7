//! The reference documents in `docs/` are generated from the code (`mtls_shield::docs`): the
//! config keys, the rejection reasons and the metrics registry. This test fails when a file
//! differs from what the code would write, and names the command that rewrites it.

use std::path::Path;

#[test]
fn generated_docs_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for doc in mtls_shield::docs::generated() {
        let path = root.join(doc.path);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk == doc.text {
            continue;
        }
        if update {
            std::fs::write(&path, &doc.text).unwrap();
        } else {
            let line = on_disk
                .lines()
                .zip(doc.text.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "its end".to_owned(), |n| format!("line {}", n + 1));
            stale.push(format!(
                "{} differs from what {} generates (first at {line})",
                doc.path, doc.source
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrewrite with:  UPDATE_DOCS=1 cargo test --test it generated_docs",
        stale.join("\n")
    );
}
