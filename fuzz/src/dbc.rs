//! DBC files through [`can_sim::dbc::import`] (`can-sim import-dbc`), strict and with
//! `--skip-invalid`. The import checks itself that its RON reads back as the same matrix
//! and validates; property here: what it prints ([`can_sim::dbc::to_ron`] pasted into a
//! profile, and [`can_sim::dbc::to_profile`]) reads back as the imported section.

use can_sim::dbc::{self, ImportOptions};

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for opts in [
        ImportOptions::default(),
        ImportOptions {
            skip_invalid: true,
            ..ImportOptions::default()
        },
    ] {
        let imported = match dbc::import(text, "fuzz.dbc", &opts) {
            Ok(i) => i,
            Err(e) => {
                crate::refused("dbc::import", &e);
                continue;
            }
        };
        let pasted = format!("Profile(name: \"imported\",\n{})\n", dbc::to_ron(&imported));
        for profile in [pasted, dbc::to_profile(&imported, "imported")] {
            match profiles::parse(&profile, "imported.ron") {
                Ok(p) => assert_eq!(
                    p.can.as_ref(),
                    Some(&imported.can),
                    "the printed section reads back different:\n{profile}"
                ),
                Err(e) => panic!("the printed section does not parse: {e}\n{profile}"),
            }
        }
    }
}
