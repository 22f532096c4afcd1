//! DBC files through [`can_sim::dbc::import`] (`can-sim import-dbc`). Property: the RON it
//! prints ([`can_sim::dbc::to_ron`]), pasted into a profile, reads back as the imported
//! `can` section.

use can_sim::dbc;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let imported = match dbc::import(text, "fuzz.dbc", None) {
        Ok(i) => i,
        Err(e) => {
            crate::refused("dbc::import", &e);
            return;
        }
    };
    let section = dbc::to_ron(&imported);
    let profile = format!("Profile(name: \"imported\",\n{section})\n");
    match profiles::parse(&profile, "imported.ron") {
        Ok(p) => assert_eq!(
            p.can.as_ref(),
            Some(&imported.can),
            "the printed section reads back different:\n{profile}"
        ),
        Err(e) => panic!("the printed section does not parse: {e}\n{profile}"),
    }
}
