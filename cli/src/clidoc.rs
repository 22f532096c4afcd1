//! Man pages and shell completions for every rtvirt binary, generated from the same clap
//! definitions that parse the command line (`<tool> generate man|completions DIR`).

use std::path::Path;

use anyhow::{Context, Result};

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// Man pages: `<tool>.1` and one per subcommand.
    Man,
    /// bash, zsh, fish, elvish and PowerShell completions.
    Completions,
}

/// Write man pages or completions for the command `cmd` (binary `bin`) into `dir`.
pub fn generate(cmd: clap::Command, bin: &str, what: Generate, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    match what {
        Generate::Man => clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("Cannot write man pages to {}", dir.display()))?,
        Generate::Completions => {
            use clap_complete::Shell;
            for shell in [
                Shell::Bash,
                Shell::Zsh,
                Shell::Fish,
                Shell::Elvish,
                Shell::PowerShell,
            ] {
                let mut c = cmd.clone();
                clap_complete::generate_to(shell, &mut c, bin, dir).with_context(|| {
                    format!("Cannot write {shell} completions to {}", dir.display())
                })?;
            }
        }
    }
    println!("wrote {what:?} for {bin} into {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo")]
    struct Demo {
        /// A flag.
        #[arg(long)]
        flag: bool,
    }

    #[test]
    fn writes_man_page_and_completions() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        generate(Demo::command(), "demo", Generate::Man, dir.path()).unwrap();
        let man = std::fs::read_to_string(dir.path().join("demo.1")).unwrap();
        assert!(man.contains("\\-\\-flag"), "{man}");
        generate(Demo::command(), "demo", Generate::Completions, dir.path()).unwrap();
        let bash = std::fs::read_to_string(dir.path().join("demo.bash")).unwrap();
        assert!(bash.contains("--flag"));
    }
}
