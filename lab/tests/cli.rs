//! CLI runs of `rtvirt-lab` that need no guest: bad input is refused before anything is
//! created, and (with the lab kernel cached) progress shows on a terminal only.

use std::path::Path;
use std::process::Command;

fn lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtvirt-lab"))
}

#[test]
fn flow_with_an_unknown_profile_fails_before_creating_its_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flow-out");
    let o = lab()
        .args(["flow", "--profile", "nosuch", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Loading profile \"nosuch\""), "{err}");
    assert!(err.contains("ecu"), "the bundled names are listed: {err}");
    assert!(!out.exists(), "{} was created", out.display());
}

#[test]
fn every_help_states_the_exit_codes() {
    for args in [&["--help"][..], &["flow", "--help"], &["boot", "--help"]] {
        let o = lab().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("Exit status:\n  0    ok\n  1    not met: boot --exec: a guest command exited non-zero\n  2    error"),
            "{args:?}: {text}"
        );
    }
}

/// `rtvirt-lab image` on a terminal (util-linux `script` gives it one): the spinner with
/// the elapsed time; into a pipe: only the lines.
#[test]
#[ignore = "needs the lab kernel (lab/setup.sh): run by lab/test.sh"]
fn lab_image_shows_a_spinner_on_a_terminal_only() {
    let layout = lab::layout::Layout::from_env().unwrap();
    let kernel = lab::layout::Kernel::from_cache(&layout.cache);
    let why = match &kernel {
        Ok(_) => String::new(),
        Err(e) => format!("no lab kernel: {e:#}"),
    };
    if !testkit::require(kernel.is_ok(), why) || !testkit::require_command("script") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rtvirt-lab");
    let img = dir.path().join("tty");
    let cmd = format!("{bin} image --no-rtvirt --out {} 2>&1", img.display());
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("00:00:0"), "no spinner: {tty:?}");
    assert!(tty.contains(" rtvirt-lab image: "), "no spinner: {tty:?}");
    assert!(Path::new(&img).join("initrd.gz").exists(), "{tty}");

    let o = lab()
        .args(["image", "--no-rtvirt", "--out"])
        .arg(dir.path().join("pipe"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains("rtvirt-lab image:"),
        "{err:?}"
    );
}

/// Bash completes below the top level (clap_complete's hyphenated-name bug worked around):
/// the generated script, loaded in a real bash, offers a subcommand's options.
#[test]
fn bash_completes_the_options_of_a_subcommand() {
    let exe = env!("CARGO_BIN_EXE_rtvirt-lab");
    let got = testkit::bash_complete_generated(exe, &["rtvirt-lab", "flow", "--"]);
    assert!(got.split(' ').any(|w| w == "--profile"), "{got:?}");
    let got = testkit::bash_complete_generated(exe, &["rtvirt-lab", "flo"]);
    assert!(got.split(' ').any(|w| w == "flow"), "{got:?}");
}

/// `lab/deb.sh` builds a .deb (dpkg-deb) with the tools, their man pages and bash
/// completions, the `rt-host hold` systemd unit, the bundled profiles and the licences.
#[test]
#[ignore = "builds the four tools and a .deb (minutes on 2 cores): run by lab/test.sh"]
fn the_debian_package_holds_binaries_man_pages_completions_units_and_profiles() {
    if !testkit::require_command("dpkg-deb") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(repo.join("lab/deb.sh"))
        .arg(dir.path())
        .env("RTVIRT_DEB_PROFILE", "dev")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let deb = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let dpkg = |flag: &str| {
        let o = Command::new("dpkg-deb")
            .args([flag, &deb])
            .output()
            .unwrap();
        assert!(o.status.success(), "dpkg-deb {flag}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let files = dpkg("-c");
    for tool in ["rt-host", "rt-guest", "can-sim", "validation"] {
        for f in [
            format!("./usr/bin/{tool}\n"),
            format!("./usr/share/man/man1/{tool}.1.gz\n"),
            format!("./usr/share/bash-completion/completions/{tool}\n"),
        ] {
            assert!(files.contains(&f), "{f:?} missing: {files}");
        }
    }
    for f in [
        "./usr/share/man/man1/rt-host-hold.1.gz\n",
        "./usr/lib/systemd/system/rtvirt-dma-latency.service\n",
        "./usr/lib/systemd/system/rtvirt-watch.service\n",
        "./usr/share/rtvirt/profiles/ecu.ron\n",
        "./usr/share/doc/rtvirt/copyright\n",
    ] {
        assert!(files.contains(f), "{f:?} missing: {files}");
    }
    let info = dpkg("-I");
    assert!(info.contains(" Package: rtvirt\n"), "{info}");
    assert!(
        info.contains(" Description: real-time KVM guests"),
        "{info}"
    );
    // The unit runs the installed binary.
    let x = dir.path().join("x");
    let o = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let unit = std::fs::read_to_string(x.join("usr/lib/systemd/system/rtvirt-dma-latency.service"))
        .unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/rt-host hold ecu --us 0\n"),
        "{unit}"
    );
    let watch =
        std::fs::read_to_string(x.join("usr/lib/systemd/system/rtvirt-watch.service")).unwrap();
    assert!(
        watch.contains("\nExecStart=/usr/bin/rt-host watch ecu\n"),
        "{watch}"
    );
    let copyright = std::fs::read_to_string(x.join("usr/share/doc/rtvirt/copyright")).unwrap();
    assert!(
        copyright.contains("License: MIT or Apache-2.0"),
        "{copyright}"
    );
    installs_runs_and_removes(&deb);
}

/// `dpkg -i` the package, run what it installed as a user would (the tools from /usr/bin,
/// a bundled profile by name, bash completion from bash-completion's directory, the units
/// through `systemd-analyze verify`), then `dpkg -r` it (also when an assertion fails).
fn installs_runs_and_removes(deb: &str) {
    if !testkit::require_root() || !testkit::require_command("systemd-analyze") {
        return;
    }
    let _g = testkit::host_lock();
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "rtvirt"])
        .output()
        .unwrap();
    let already = String::from_utf8_lossy(&installed.stdout).contains("install ok installed");
    if !testkit::require(
        !already,
        "rtvirt is installed on this machine already: not replaced",
    ) {
        return;
    }
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let o = Command::new("dpkg")
                .args(["-r", "rtvirt"])
                .output()
                .unwrap();
            assert!(o.status.success(), "dpkg -r rtvirt: {o:?}");
        }
    }
    let o = Command::new("dpkg").args(["-i", deb]).output().unwrap();
    let _remove = Remove;
    assert!(o.status.success(), "dpkg -i {deb}: {o:?}");
    let run = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for tool in ["rt-host", "rt-guest", "can-sim", "validation"] {
        let v = run(&[&format!("/usr/bin/{tool}"), "--version"]);
        assert!(v.starts_with(&format!("{tool} ")), "{v}");
    }
    let args = run(&["/usr/bin/rt-host", "boot-args", "ecu"]);
    assert!(args.contains("isolcpus="), "{args}");
    let completed = testkit::bash_complete(
        Path::new("/usr/share/bash-completion/completions/rt-host"),
        &["rt-host", "setup", "--"],
    );
    assert!(completed.contains("--journal-dir"), "{completed}");
    run(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/usr/lib/systemd/system/rtvirt-dma-latency.service",
        "/usr/lib/systemd/system/rtvirt-watch.service",
    ]);
}

#[test]
fn a_reader_that_leaves_early_is_no_error() {
    let dir = tempfile::tempdir().unwrap();
    testkit::assert_quiet_on_closed_stdout(lab().arg("generate").arg("man").arg(dir.path()));
}
