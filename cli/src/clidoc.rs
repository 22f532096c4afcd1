//! Man pages and shell completions for every rtvirt binary, generated from the same clap
//! definitions that parse the command line (`<tool> generate man|completions DIR`).
//!
//! Two things clap's generators do not do are done here: the man pages get an EXIT STATUS
//! section (from [`crate::exit::Tool`]), and the bash completion of a binary whose name has
//! a hyphen (`rt-host`) completes below the top level. clap_complete 4.6 spells the state
//! of a subcommand two ways in that case: the loop that walks the words sets
//! `rt__host__subcmd__check`, the `case` arms test `rt__subcmd__host__subcmd__check`, so no
//! subcommand arm ever matches (clap-rs/clap#6421, still open); [`fix_bash`] renames the
//! arms to what the loop sets.

use std::path::Path;

use anyhow::{Context, Result};
use clap_complete::{Generator, Shell};

use crate::exit::Tool;

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// Man pages: `<tool>.1` and one per subcommand.
    Man,
    /// bash, zsh, fish, elvish and PowerShell completions.
    Completions,
}

/// The shells completions are written for, and each one's file name for binary `bin`.
pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::Elvish,
    Shell::PowerShell,
];

/// Write man pages or completions for `cmd` (the binary `tool`) into `dir`.
pub fn generate(cmd: clap::Command, tool: &Tool, what: Generate, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    match what {
        Generate::Man => write_man_pages(cmd, tool, dir)?,
        Generate::Completions => {
            for shell in SHELLS {
                let text = completion(cmd.clone(), tool.bin, shell);
                let file = dir.join(shell.file_name(tool.bin));
                rt_sys::safefile::write_output(&file, text.as_bytes()).with_context(|| {
                    format!("Cannot write {shell} completions to {}", file.display())
                })?;
            }
        }
    }
    crate::outln!("wrote {what:?} for {} into {}", tool.bin, dir.display());
    Ok(())
}

/// The completion script of `cmd` (binary `bin`) for `shell`.
pub fn completion(mut cmd: clap::Command, bin: &str, shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    match shell {
        Shell::Bash => fix_bash(&text, bin),
        _ => text,
    }
}

/// The bash script with each subcommand's `case` arm named as the word loop names the
/// state (see the module documentation); unchanged for a name without a hyphen or once
/// clap_complete spells both the same.
pub fn fix_bash(script: &str, bin: &str) -> String {
    const SEP: &str = "__subcmd__";
    let wrong = format!("{}{SEP}", bin.replace('-', SEP));
    let right = format!("{}{SEP}", bin.replace('-', "__"));
    if wrong == right {
        return script.to_string();
    }
    script
        .lines()
        .map(|l| {
            // Only the arms (`        STATE)`), never a word the user types.
            let t = l.trim_start();
            if t.starts_with(&wrong) && t.ends_with(')') && !t.contains(' ') {
                l.replacen(&wrong, &right, 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if script.ends_with('\n') { "\n" } else { "" }
}

/// The EXIT STATUS section (roff) of `tool`'s man pages.
pub fn exit_status_roff(tool: &Tool) -> String {
    let mut r = roff::Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    for st in tool.statuses() {
        r.control("TP", []);
        r.text([roff::bold(st.code.to_string())]);
        r.text([roff::roman(st.meaning)]);
    }
    r.to_roff()
}

/// One man page per command and visible subcommand (as `clap_mangen::generate_to`), each
/// with the EXIT STATUS section before VERSION.
fn write_man_pages(cmd: clap::Command, tool: &Tool, dir: &Path) -> Result<()> {
    fn walk(cmd: clap::Command, exit: &str, dir: &Path) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, exit, dir)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut page = Vec::new();
        man.render(&mut page)?;
        let page = with_section(&String::from_utf8_lossy(&page), exit);
        let file = dir.join(man.get_filename());
        rt_sys::safefile::write_output(&file, page.as_bytes())
            .with_context(|| format!("Cannot write the man page {}", file.display()))
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    walk(cmd, &exit_status_roff(tool), dir)
}

/// `page` with `section` inserted before its VERSION section (at the end without one).
fn with_section(page: &str, section: &str) -> String {
    match page.find("\n.SH VERSION") {
        Some(i) => format!("{}\n{}{}", &page[..i], section.trim_end(), &page[i..]),
        None => format!("{}{section}", page),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hyphenated binary with a hyphenated subcommand, as rt-host's `boot-args`.
    #[derive(clap::Parser)]
    #[command(name = "demo-tool", version)]
    struct Demo {
        /// A flag.
        #[arg(long)]
        flag: bool,
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        /// Print the arguments.
        BootArgs {
            /// Print JSON.
            #[arg(long)]
            json: bool,
        },
    }

    const TOOL: Tool = Tool {
        bin: "demo-tool",
        not_met: "a check differs",
        interrupted: false,
    };

    #[test]
    fn man_pages_have_an_exit_status_section_before_version() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        generate(Demo::command(), &TOOL, Generate::Man, dir.path()).unwrap();
        let man = std::fs::read_to_string(dir.path().join("demo-tool.1")).unwrap();
        assert!(man.contains("\\-\\-flag"), "{man}");
        let exit = man.find(".SH \"EXIT STATUS\"").expect(&man);
        assert!(exit < man.find(".SH VERSION").unwrap(), "{man}");
        assert!(
            man.contains(".TP\n\\fB1\\fR\nnot met: a check differs"),
            "{man}"
        );
        let sub = std::fs::read_to_string(dir.path().join("demo-tool-boot-args.1")).unwrap();
        assert!(sub.contains(".SH \"EXIT STATUS\""), "{sub}");
    }

    #[test]
    fn bash_arms_are_named_as_the_loop_names_the_state() {
        use clap::CommandFactory;
        let text = completion(Demo::command(), "demo-tool", Shell::Bash);
        assert!(
            text.contains("cmd=\"demo__tool__subcmd__boot__subcmd__args\""),
            "{text}"
        );
        assert!(
            text.contains("\n        demo__tool__subcmd__boot__subcmd__args)\n"),
            "{text}"
        );
        assert!(!text.contains("demo__subcmd__tool"), "{text}");
    }

    /// What bash completes for `words` (the last one being completed) with `script` loaded.
    pub(crate) fn complete_in_bash(script: &str, words: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("completion.bash");
        std::fs::write(&file, script).unwrap();
        testkit::bash_complete(&file, words)
    }

    #[test]
    fn bash_completes_below_the_top_level_of_a_hyphenated_binary() {
        use clap::CommandFactory;
        let text = completion(Demo::command(), "demo-tool", Shell::Bash);
        let func = "_demo__tool";
        assert!(text.contains(&format!("complete -F {func} ")), "{text}");
        assert_eq!(
            complete_in_bash(&text, &["demo-tool", "boot-args", "--"]),
            "--json --help"
        );
        assert_eq!(complete_in_bash(&text, &["demo-tool", "boo"]), "boot-args");
        // What clap_complete wrote unfixed completes nothing there.
        let mut raw = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Demo::command(), "demo-tool", &mut raw);
        let raw = String::from_utf8(raw).unwrap();
        assert_eq!(
            complete_in_bash(&raw, &["demo-tool", "boot-args", "--"]),
            ""
        );
    }

    #[test]
    fn fix_bash_leaves_names_without_hyphens_alone() {
        let s = "        validation__subcmd__report)\n";
        assert_eq!(fix_bash(s, "validation"), s);
    }
}
