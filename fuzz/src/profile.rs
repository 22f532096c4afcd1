//! Profiles: RON text through [`profiles::parse`] and [`profiles::validate`], as
//! `profiles::load` reads a file. Property: a profile that validates is written back by
//! `ron` (as `can-sim import-dbc` writes its section) and reads back equal.

use profiles::Profile;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = match profiles::parse(text, "fuzz.ron") {
        Ok(p) => p,
        Err(e) => {
            crate::refused("profiles::parse", &e);
            return;
        }
    };
    if let Err(errors) = profiles::validate(&p) {
        assert!(!errors.is_empty(), "validate failed without saying why");
        for e in &errors {
            let _ = e.to_string();
        }
        return;
    }
    round_trip(&p);
}

fn round_trip(p: &Profile) {
    let Ok(written) = ron::ser::to_string_pretty(p, ron::ser::PrettyConfig::new()) else {
        return;
    };
    let back = profiles::parse(&written, "round-trip.ron").unwrap_or_else(|e| {
        panic!("a valid profile written by ron does not read back: {e}\n{written}")
    });
    assert_eq!(&back, p, "a valid profile reads back different:\n{written}");
}
