//! CLI runs of the `can-sim` binary: analyze, import-dbc, replay and run error paths.

use std::process::Command;

fn can_sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_can-sim"))
}

fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().expect("run can-sim");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn analyze_lab_prints_every_message() {
    let (code, stdout, _) = out(can_sim().args(["analyze", "lab"]));
    assert_eq!(code, 0, "{stdout}");
    for name in [
        "EngineSpeed",
        "WheelSpeeds",
        "EngineTorque",
        "BodyStatus",
        "Climate",
    ] {
        assert!(stdout.contains(name), "{name} missing:\n{stdout}");
    }
    assert!(stdout.contains("all messages schedulable"));
}

#[test]
fn analyze_json_has_wcrt_and_slack() {
    let (code, stdout, _) = out(can_sim().args(["analyze", "ecu", "--json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 12);
    // AirbagStatus (0x050) is the highest priority: blocked by the longest lower frame
    // (the extended Climate, 160 bits = 320 us) plus its own 270 us.
    assert_eq!(msgs[0]["name"], "AirbagStatus");
    assert_eq!(msgs[0]["wcrt_us"], 590.0);
    assert_eq!(msgs[0]["slack_us"], 2000.0 - 590.0);
    assert!(v["total_load_pct"].as_f64().unwrap() > 10.0);
}

#[test]
fn analyze_unschedulable_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("over.ron");
    std::fs::write(
        &p,
        r#"Profile(name: "over", can: Some((bitrate: 125000, tx: "vcan0", rx: "vcan0",
            ecus: [(name: "e", messages: [
              (name: Some("Fast"), id: 0x10, len: 8, period_ms: 2),
              (name: Some("Slow"), id: 0x20, len: 8, period_ms: 2, deadline_us: Some(1500)),
            ])])))"#,
    )
    .unwrap();
    let (code, stdout, _) = out(can_sim().args(["analyze", p.to_str().unwrap()]));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not schedulable: Slow"), "{stdout}");
}

#[test]
fn import_dbc_prints_a_loadable_can_section() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/powertrain.dbc");
    let (code, stdout, stderr) =
        out(can_sim().args(["import-dbc", fixture, "--bitrate", "500000"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bitrate: 500000"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dbc.ron");
    std::fs::write(&p, format!("Profile(name: \"dbc\", {stdout})")).unwrap();
    let (code, a, e) = out(can_sim().args(["analyze", p.to_str().unwrap()]));
    assert_eq!(code, 0, "{a}{e}");
    assert!(a.contains("EngineSpeed") && a.contains("0x18FF5021"), "{a}");
}

#[test]
fn import_dbc_writes_a_whole_profile_and_says_what_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let dbc = dir.path().join("m.dbc");
    std::fs::write(
        &dbc,
        "BU_: A\nBO_ 1 Cyc: 8 A\nBO_ 2 Ev: 8 A\nBO_ 3 Late: 8 A\n\
         BA_DEF_ BO_ \"GenMsgCycleTime\" INT 0 65535;\n\
         BA_DEF_ BO_ \"GenMsgStartDelayTime\" INT 0 65535;\n\
         BA_ \"GenMsgCycleTime\" BO_ 1 10;\nBA_ \"GenMsgCycleTime\" BO_ 3 10;\n\
         BA_ \"GenMsgStartDelayTime\" BO_ 3 12;\n",
    )
    .unwrap();
    let ron = dir.path().join("m.ron");
    let (code, stdout, stderr) = out(can_sim().args([
        "import-dbc",
        dbc.to_str().unwrap(),
        "--min-interval",
        "Ev=20",
        "--name",
        "matrix",
        "--out",
        ron.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("4:1: message Late: GenMsgStartDelayTime 12 ms is not below its period"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 periodic and 1 sporadic messages from 1 ECUs"),
        "{stderr}"
    );
    let (code, a, e) = out(can_sim().args(["analyze", ron.to_str().unwrap()]));
    assert_eq!(code, 0, "{a}{e}");
    assert!(a.contains(">=20"), "{a}");
    // An id that is not a CAN id: exit 2, the message and its place named.
    std::fs::write(&dbc, "BU_: A\n\nBO_ 1075054137 Bad: 8 A\n").unwrap();
    let (code, _, stderr) = out(can_sim().args(["import-dbc", dbc.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("3:5: Message Bad: id 0x40140639"),
        "{stderr}"
    );
}

#[test]
fn replay_checks_the_whole_log_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("x.log");
    std::fs::write(&log, "(1.000000) can0 123#00\n(2.000000) can0 123#GG\n").unwrap();
    let (code, _, stderr) =
        out(can_sim().args(["replay", log.to_str().unwrap(), "--iface", "vcan0"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("x.log:2: not a candump log line"),
        "{stderr}"
    );
    let (code, _, stderr) = out(can_sim().args([
        "replay",
        log.to_str().unwrap(),
        "--iface",
        "vcan0",
        "--max-gap",
        "soon",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("\"soon\" is not a duration or \"none\""),
        "{stderr}"
    );
}

#[test]
fn profile_read_errors_print_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.ron");
    std::fs::write(&p, b"\xff\xfe").unwrap();
    let (code, _, stderr) = out(can_sim().args(["analyze", p.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(stderr.contains("Cannot read profile"), "{stderr}");
    assert!(
        stderr.contains("caused by: stream did not contain valid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn missing_files_are_named_with_exit_2() {
    let (code, _, stderr) =
        out(can_sim().args(["replay", "/nonexistent/can.log", "--iface", "vcan0"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/can.log"), "{stderr}");
    let (code, _, stderr) = out(can_sim().args(["import-dbc", "/nonexistent/x.dbc"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/x.dbc"), "{stderr}");
}

#[test]
fn run_without_socketcan_or_interface_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = out(can_sim().args([
        "run",
        "lab",
        "--tx",
        "rtvirtnone0",
        "--rx",
        "rtvirtnone0",
        "--duration",
        "1s",
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("AF_CAN not supported by this kernel")
            || stderr.contains("\"rtvirtnone0\" does not exist"),
        "{stderr}"
    );
}

#[test]
fn the_clock_exchange_is_the_receivers_and_replaces_a_stated_offset() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut c = can_sim();
        c.args(["run", "lab", "--duration", "1s", "--clock-dir"])
            .arg(dir.path())
            .args(extra);
        out(&mut c)
    };
    let (code, _, stderr) = run(&["--role", "sender"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--clock-dir measures the receiver's clock against the sender's: it needs --role receiver"), "{stderr}");
    let (code, _, stderr) = run(&["--role", "receiver", "--clock-offset-ns", "5"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("'--clock-dir <DIR>' cannot be used with '--clock-offset-ns"),
        "{stderr}"
    );
}

#[test]
fn round_trip_reply_ids_are_checked_before_the_bus() {
    let (code, _, stderr) =
        out(can_sim().args(["run", "lab", "--role", "round-trip", "--echo-xor", "0x800"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is beyond the 11-bit identifiers of its frame format"),
        "{stderr}"
    );
    let (code, _, stderr) =
        out(can_sim().args(["run", "lab", "--role", "echo", "--echo-xor", "0"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--echo-xor 0 would echo every frame on its own id"),
        "{stderr}"
    );
    let (code, _, stderr) = out(can_sim().args(["run", "lab", "--role", "ping"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is not a role (both, sender, receiver, echo, round-trip)"),
        "{stderr}"
    );
}

/// Bash completes below the top level (clap_complete's hyphenated-name bug worked around):
/// the generated script, loaded in a real bash, offers a subcommand's options.
#[test]
fn bash_completes_the_options_of_a_subcommand() {
    let exe = env!("CARGO_BIN_EXE_can-sim");
    let got = testkit::bash_complete_generated(exe, &["can-sim", "replay", "--"]);
    assert!(got.split(' ').any(|w| w == "--max-gap"), "{got:?}");
    let got = testkit::bash_complete_generated(exe, &["can-sim", "repl"]);
    assert!(got.split(' ').any(|w| w == "replay"), "{got:?}");
}

#[test]
fn a_reader_that_leaves_early_is_no_error() {
    testkit::assert_quiet_on_closed_stdout(can_sim().args(["analyze", "lab"]));
    testkit::assert_quiet_on_closed_stdout(can_sim().args(["analyze", "lab", "--json"]));
}
