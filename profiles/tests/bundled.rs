//! Every bundled profile loads and validates; names and paths both work.

#[test]
fn every_bundled_profile_loads_and_validates() {
    for (name, _) in profiles::BUNDLED {
        let l = profiles::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!l.profile.name.is_empty());
        let with_ext = format!("{name}.ron");
        assert_eq!(profiles::load(&with_ext).unwrap().profile, l.profile);
    }
}

#[test]
fn loads_by_path() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ecu.ron");
    let l = profiles::load(path).unwrap();
    assert_eq!(l.profile.name, "ecu-asil-d");
    assert_eq!(l.sha256().len(), 64);
}

#[test]
fn syntax_error_has_line_column_and_path() {
    let text = "Profile(\n  name: \"x\",\n  host: Some((housekeeping_cpus: \"0\", realtime_cpus: \"1\", bogus: 1)),\n)";
    let e = profiles::parse(text, "t.ron").unwrap_err().to_string();
    assert!(e.starts_with("t.ron:3:"), "{e}");
    assert!(e.contains("bogus"), "{e}");
    assert!(e.contains("host"), "{e}");
}
