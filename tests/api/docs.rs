//! The README's configuration table and `config/default.toml` agree, and every setting has a
//! comment.

#[test]
fn every_setting_is_commented_and_in_the_readme() {
    let root = env!("CARGO_MANIFEST_DIR");
    let toml = std::fs::read_to_string(format!("{root}/config/default.toml")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let mut section = String::new();
    let mut previous = "";
    let mut keys = Vec::new();
    for line in toml.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if line.starts_with('#') {
            // a comment, or a commented-out example
        } else if let Some((key, _)) = line.split_once(" = ") {
            let key = format!("{section}.{}", key.trim());
            assert!(
                previous.starts_with('#'),
                "{key} has no comment in config/default.toml"
            );
            keys.push(key);
        }
        previous = line;
    }
    assert!(keys.len() > 10);
    for key in &keys {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "{key} is missing from the README's table"
        );
    }
    let rows = readme
        .lines()
        .filter(|l| {
            l.starts_with("| `")
                && l.contains('.')
                && !l.contains("metricgate ")
                && !l.contains("GET ")
        })
        .count();
    assert_eq!(
        rows,
        keys.len(),
        "the README's table has settings config/default.toml lacks"
    );
}
