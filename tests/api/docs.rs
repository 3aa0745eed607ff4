//! The configuration reference (`docs/configuration.md`) and `config/default.toml` agree, every
//! setting has a comment, and the README's short table names only real settings.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `section.key` of config/default.toml, each checked to have a comment above it.
fn commented_settings() -> Vec<String> {
    let mut section = String::new();
    let mut previous = "";
    let mut keys = Vec::new();
    let toml = read("config/default.toml");
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
    keys
}

/// The settings a Markdown table lists: rows whose first cell is `` `section.key` ``.
fn table_settings(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(name, _)| name)
        .filter(|name| {
            name.split_once('.').is_some_and(|(s, k)| {
                [s, k].iter().all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
            })
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_is_commented_and_in_the_configuration_reference() {
    let keys = commented_settings();
    assert!(keys.len() > 10);
    let reference = table_settings(&read("docs/configuration.md"));
    for key in &keys {
        assert!(
            reference.contains(key),
            "{key} is missing from docs/configuration.md's table"
        );
    }
    assert_eq!(
        reference.len(),
        keys.len(),
        "docs/configuration.md's table has settings config/default.toml lacks"
    );
}

#[test]
fn the_readme_lists_ten_real_settings_and_links_the_rest() {
    let keys = commented_settings();
    let readme = read("README.md");
    let listed = table_settings(&readme);
    for key in &listed {
        assert!(
            keys.contains(key),
            "the README lists {key}, which is no setting"
        );
    }
    assert_eq!(
        listed.len(),
        10,
        "the ten settings people change: {listed:?}"
    );
    assert!(readme.contains("(docs/configuration.md)"));
}
