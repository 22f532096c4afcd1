//! cyclictest `-h` histogram text (what `rt-guest probe --histfile` and the cyclictest
//! drop-in write, and what the tests compare with rt-tests' cyclictest) through
//! [`rt_guest::cyclictest::parse_layout`] and its shape.

use rt_guest::cyclictest;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cyclictest::parse_layout(text) {
        Ok(lines) => {
            assert!(lines.len() <= text.lines().count());
            let _ = cyclictest::layout_shape(&lines);
        }
        Err(e) => assert!(e.starts_with("line "), "an error names its line: {e}"),
    }
}
