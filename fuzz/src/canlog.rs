//! candump logs through [`can_sim::canlog::parse`] and the replay timing. Properties:
//! every record rendered as candump text (what `can-sim run` writes) parses back to the
//! same text; replay offsets never go back in time.

use can_sim::canlog;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let records = match canlog::parse(text, "fuzz.log") {
        Ok(r) => r,
        Err(e) => {
            crate::refused("canlog::parse", &e);
            return;
        }
    };
    let offsets = canlog::replay_offsets(&records);
    assert_eq!(offsets.len(), records.len());
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "replay offsets go back in time: {offsets:?}"
    );
    let mut rendered = String::new();
    for r in &records {
        let _ = canlog::frame_id(&r.frame);
        let _ = canlog::frame_data(&r.frame);
        rendered.push_str(&r.to_string());
        rendered.push('\n');
    }
    let again = canlog::parse(&rendered, "rendered.log")
        .unwrap_or_else(|e| panic!("rendered records do not parse back: {e}\n{rendered}"));
    let rendered_again: String = again.iter().map(|r| format!("{r}\n")).collect();
    assert_eq!(
        rendered_again, rendered,
        "rendered records read back different"
    );
}
