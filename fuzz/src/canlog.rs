//! candump logs as `can-sim replay` and the tests read them: [`can_sim::canlog::parse`]
//! (the streaming [`can_sim::canlog::LogReader`] over text, can-utils' `len8_dlc` forms
//! included), [`can_sim::replay::survey`] on the same text as a file, and the replay clock.
//! Properties: the survey counts what the parser reads; every record rendered as candump
//! text (what `can-sim run` writes) parses back to the same text; replay offsets never go
//! back in time, with or without a gap limit.

use can_sim::canlog::{self, ReplayClock};

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = canlog::parse(text, "fuzz.log");
    let file = crate::scratch::fresh("canlog").join("fuzz.log");
    std::fs::write(&file, data).expect("scratch log");
    let survey = can_sim::replay::survey(&file);
    let records = match parsed {
        Ok(r) => r,
        Err(e) => {
            assert!(
                survey.is_err(),
                "the survey accepts what the parser refuses: {e}"
            );
            crate::refused("canlog::parse", &e);
            return;
        }
    };
    match survey {
        Ok((frames, _)) => assert_eq!(frames, records.len() as u64, "survey count"),
        Err(e) => panic!(
            "the survey refuses what the parser reads: {}",
            crate::chain(&e)
        ),
    }
    for max_gap in [None, Some(1_000_000)] {
        let mut clock = ReplayClock::new(max_gap);
        let mut last = 0;
        for r in &records {
            let off = clock.offset(r.record.t_us);
            assert!(off >= last, "replay offset {off} after {last}");
            last = off;
        }
    }
    let mut rendered = String::new();
    for r in &records {
        let _ = canlog::frame_id(&r.record.frame);
        let _ = canlog::frame_data(&r.record.frame);
        rendered.push_str(&r.record.to_string());
        rendered.push('\n');
    }
    let again = canlog::parse(&rendered, "rendered.log")
        .unwrap_or_else(|e| panic!("rendered records do not parse back: {e}\n{rendered}"));
    let rendered_again: String = again.iter().map(|r| format!("{}\n", r.record)).collect();
    assert_eq!(
        rendered_again, rendered,
        "rendered records read back different"
    );
}
