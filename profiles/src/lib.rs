//! `profiles`: the RON profile language of rtvirt.
//!
//! A profile says how to tune the host (`host`), what to measure in the guest (`guest`),
//! which CAN matrix to simulate (`can`) and which timing requirements the evidence must
//! show (`requirements`). [`load`] takes a path or a bundled name (`ecu` means the
//! embedded `profiles/ecu.ron`), parses it with field paths in errors, and validates it.
//!
//! - Syntax and type errors: `origin:line:column: field.path: message`
//!   ([`ProfileError::Syntax`]); optional fields may be written with or without `Some(..)`.
//! - Semantic errors: every problem at once, each `field.path: value problem`
//!   ([`validate()`], [`ProfileError::Invalid`]).
//! - Machine checks, through a [`rt_sys::SysRoot`]: [`validate_against`] for the host
//!   section on the KVM host, [`validate_guest_against`] for the guest CPUs in the guest.
//!
//! Every field, unit and default is documented in `docs/profiles.md`.

mod rules;
pub mod schema;
pub mod validate;
pub mod vms;

/// Profiles the unit tests share.
#[cfg(test)]
pub(crate) mod test_profiles {
    /// The single-VM form (`host.vm`, `host.vcpus`), as the lab profile was first written.
    pub const SINGLE_VM: &str = r#"Profile(name: "single", host: Some((
        housekeeping_cpus: "0", realtime_cpus: "1",
        kernel: (require_preempt_rt: false),
        vm: Some((qemu_name: Some("lab"), memory_mib: Some(512))),
        vcpus: [(vcpu: 1, cpu: 1, policy: Fifo, priority: 50)],
        emulator_cpus: Some("0"), iothread_cpus: Some("0"),
    )))"#;

    /// [`SINGLE_VM`], parsed.
    pub fn single_vm() -> crate::Profile {
        crate::parse(SINGLE_VM, "single").expect("the single-VM test profile")
    }
}

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use schema::*;
pub use validate::{validate, validate_against, validate_guest_against, ValidationError};
pub use vms::{host_vms, VmView};

/// The bundled profiles: (name, RON text).
pub const BUNDLED: &[(&str, &str)] = &[
    ("ecu", include_str!("../ecu.ron")),
    ("lab", include_str!("../lab.ron")),
    ("canfd", include_str!("../canfd.ron")),
    ("hil", include_str!("../hil.ron")),
    ("soak", include_str!("../soak.ron")),
];

/// Where a profile came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// A bundled profile, by name.
    Bundled(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Bundled(n) => write!(f, "bundled profile {n:?}"),
        }
    }
}

/// A loaded, validated profile with its source text (kept for the evidence record).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The profile.
    pub profile: Profile,
    /// The exact RON text it was parsed from.
    pub text: String,
    /// Where it came from.
    pub origin: Origin,
}

impl Loaded {
    /// Check the `host` section against the machine behind `root` (the KVM host):
    /// [`validate_against`], as an error naming the profile.
    pub fn check_host(&self, root: &rt_sys::SysRoot) -> Result<(), ProfileError> {
        validate_against(&self.profile, root).map_err(|errors| self.on_this_machine(errors))
    }

    /// Check the guest-side CPUs against the machine behind `root` (the guest):
    /// [`validate_guest_against`], as an error naming the profile.
    pub fn check_guest(&self, root: &rt_sys::SysRoot) -> Result<(), ProfileError> {
        validate_guest_against(&self.profile, root).map_err(|errors| self.on_this_machine(errors))
    }

    fn on_this_machine(&self, errors: Vec<ValidationError>) -> ProfileError {
        ProfileError::Invalid {
            origin: format!("{} on this machine", self.origin),
            errors,
        }
    }

    /// SHA-256 of the source text, lower-case hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Neither a readable file nor a bundled name.
    #[error("No profile {name:?}: not a file, and not a bundled profile ({bundled})")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The bundled names.
        bundled: String,
    },
    /// The file exists but could not be read.
    #[error("Cannot read profile {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// RON syntax or type error.
    #[error("{origin}:{line}:{column}: {path}: {message}")]
    Syntax {
        /// Where the profile came from.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Field path (`host.vcpus[0].priority`), `.` for the top level.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Semantic errors (one or more).
    #[error("{origin}: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Where the profile came from.
        origin: String,
        /// Every problem found.
        errors: Vec<ValidationError>,
    },
}

/// The RON options profiles are read with: `IMPLICIT_SOME`, so optional fields may be
/// written plainly (`halt_poll_ns: 200000`) as well as `Some(200000)`.
fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

/// Parse RON text into a [`Profile`] without semantic validation.
///
/// Errors carry `origin:line:column`, the field path and what is wrong, e.g.
/// `lab.ron:22:57: guest.probe.priority: Integer is out of bounds (found `300`)`.
pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
    let mut de = ron::de::Deserializer::from_str_with_options(text, &ron_options())
        .map_err(|e| syntax(text, origin, &e, "."))?;
    let result: Result<Profile, _> = serde_path_to_error::deserialize(&mut de);
    match result {
        Ok(p) => {
            de.end().map_err(|e| {
                let mut spanned = de.span_error(e);
                spanned.span.start = trailing_start(text, de.remainder());
                syntax(text, origin, &spanned, ".")
            })?;
            Ok(p)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let spanned = de.span_error(inner);
            Err(syntax(text, origin, &spanned, &path))
        }
    }
}

fn syntax(text: &str, origin: &str, e: &ron::error::SpannedError, path: &str) -> ProfileError {
    let (line, mut column) = (e.span.start.line, e.span.start.col);
    // ron sometimes reports the white space before a value: point at the value.
    if let Some(src_line) = text.lines().nth(line.saturating_sub(1)) {
        let ahead = src_line
            .chars()
            .skip(column.saturating_sub(1))
            .take_while(|c| c.is_whitespace())
            .count();
        if src_line.chars().count() > column.saturating_sub(1) + ahead {
            column += ahead;
        }
    }
    let mut path = clean_path(path);
    let message = match fraction_in_integer(text, &e.code, line, column) {
        Some((field, value, at)) => {
            column = at;
            if !field.is_empty() {
                path = if path == "." {
                    field
                } else {
                    format!("{path}.{field}")
                };
            }
            format!("Expected an integer, found `{value}`")
        }
        None => explain(text, &e.code, line, column),
    };
    ProfileError::Syntax {
        origin: origin.to_string(),
        line,
        column,
        path,
        message,
    }
}

/// Where trailing text begins: the first character after the profile that is neither
/// white space nor a comment (ron reports the end of the profile instead).
fn trailing_start(text: &str, remainder: &str) -> ron::error::Position {
    let mut rest = remainder;
    loop {
        let t = rest.trim_start();
        if let Some(c) = t.strip_prefix("//") {
            rest = c.find('\n').map_or("", |i| &c[i..]);
        } else if let Some(c) = t.strip_prefix("/*") {
            rest = c.find("*/").map_or("", |i| &c[i + 2..]);
        } else {
            rest = t;
            break;
        }
    }
    let offset = text.len().saturating_sub(rest.len());
    let before = &text[..offset];
    ron::error::Position {
        line: before.matches('\n').count() + 1,
        col: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
    }
}

/// `serde_path_to_error` writes `?` for a place it could not name (`host.?`): drop it.
fn clean_path(path: &str) -> String {
    let mut p = path;
    while let Some(rest) = p.strip_suffix(".?") {
        p = rest;
    }
    if p.is_empty() || p == "?" {
        ".".to_string()
    } else {
        p.to_string()
    }
}

/// ron reads `50.5` in an integer field as `50` followed by junk, and says "Expected
/// comma" after the struct's field: find the field, the whole number and its column.
fn fraction_in_integer(
    text: &str,
    code: &ron::Error,
    line: usize,
    column: usize,
) -> Option<(String, String, usize)> {
    if !matches!(
        code,
        ron::Error::ExpectedComma | ron::Error::ExpectedStructLikeEnd
    ) {
        return None;
    }
    let chars: Vec<char> = text.lines().nth(line.checked_sub(1)?)?.chars().collect();
    let at = column.checked_sub(1)?;
    if chars.get(at) != Some(&'.') || !chars.get(at + 1).is_some_and(char::is_ascii_digit) {
        return None;
    }
    let int_start = chars[..at]
        .iter()
        .rposition(|c| !c.is_ascii_digit() && *c != '-')
        .map_or(0, |i| i + 1);
    if int_start == at {
        return None;
    }
    let frac_end = chars[at + 1..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(chars.len(), |i| at + 1 + i);
    let value: String = chars[int_start..frac_end].iter().collect();
    let before: String = chars[..int_start].iter().collect();
    let field: String = before
        .trim_end()
        .strip_suffix(':')
        .map(|b| {
            let ident: Vec<char> = b
                .trim_end()
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            ident.into_iter().rev().collect()
        })
        .unwrap_or_default();
    Some((field, value, int_start + 1))
}

/// The parser's message, plus what it found where that helps: the offending token for
/// type and range errors, and the likely place of a missing comma.
fn explain(text: &str, code: &ron::Error, line: usize, column: usize) -> String {
    use ron::Error as E;
    let msg = code.to_string();
    let src_line = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    // ron reports a negative integer at its digits: take the sign along.
    let mut start = column.saturating_sub(1);
    if start > 0 && matches!(src_line.chars().nth(start - 1), Some('-' | '+')) {
        start -= 1;
    }
    let rest: String = src_line.chars().skip(start).collect();
    let token: String = rest
        .chars()
        .take_while(|c| !matches!(c, ',' | ')' | ']' | '}') && *c != '\n')
        .collect();
    let token = token.trim();
    match code {
        E::ExpectedComma | E::ExpectedArrayEnd | E::ExpectedStructLikeEnd
            if src_line
                .chars()
                .take(column.saturating_sub(1))
                .all(char::is_whitespace)
                && line > 1 =>
        {
            format!("{msg} (missing at the end of line {}?)", line - 1)
        }
        E::IntegerOutOfBounds
        | E::ExpectedInteger
        | E::ExpectedFloat
        | E::ExpectedBoolean
        | E::ExpectedString
        | E::ExpectedStringEnd
        | E::ExpectedOption
        | E::ExpectedArray
        | E::ExpectedMap
        | E::ExpectedStructLike
        | E::ExpectedNamedStructLike(_)
        | E::ExpectedUnit
        | E::InvalidValueForType { .. }
            if !token.is_empty() =>
        {
            format!("{msg} (found `{token}`)")
        }
        _ => msg,
    }
}

/// Load a profile by path, or by bundled name (`ecu`, `lab`, `canfd`, with or without
/// `.ron`) when no such file exists, and validate it. A file in the current directory
/// wins over a bundled profile of the same name; a path with a `/` is never replaced by
/// a bundled profile.
pub fn load(name_or_path: &str) -> Result<Loaded, ProfileError> {
    let path = Path::new(name_or_path);
    let (text, origin) = if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        (text, Origin::File(path.to_path_buf()))
    } else {
        // Only a bare name falls back to the bundled profiles: a path that does not exist
        // (`conf/ecu.ron`) is a mistake to report, not a request for the bundled `ecu`.
        let stem = name_or_path.strip_suffix(".ron").unwrap_or(name_or_path);
        let bare = !name_or_path.contains(std::path::MAIN_SEPARATOR) && !name_or_path.contains('/');
        match BUNDLED.iter().find(|(n, _)| *n == stem) {
            Some((n, t)) if bare => ((*t).to_string(), Origin::Bundled(n)),
            _ => {
                return Err(ProfileError::NotFound {
                    name: name_or_path.to_string(),
                    bundled: BUNDLED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    };
    let profile = parse(&text, &origin.to_string())?;
    validate(&profile).map_err(|errors| ProfileError::Invalid {
        origin: origin.to_string(),
        errors,
    })?;
    Ok(Loaded {
        profile,
        text,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_path_segments_are_dropped() {
        assert_eq!(clean_path("host.?"), "host");
        assert_eq!(clean_path("?"), ".");
        assert_eq!(
            clean_path("can.ecus[0].messages[1]"),
            "can.ecus[0].messages[1]"
        );
    }

    #[test]
    fn trailing_text_skips_space_and_comments() {
        let text = "Profile(name: \"x\")\n  // done\n  /* really */ junk";
        let rest = &text[text.find(')').unwrap() + 1..];
        let p = trailing_start(text, rest);
        assert_eq!((p.line, p.col), (3, 16));
    }

    #[test]
    fn fraction_names_field_value_and_column() {
        let text = "(a: 1, prio: -5.25)";
        let got = fraction_in_integer(text, &ron::Error::ExpectedComma, 1, 16);
        assert_eq!(got, Some(("prio".to_string(), "-5.25".to_string(), 14)));
        assert_eq!(
            fraction_in_integer(text, &ron::Error::ExpectedInteger, 1, 16),
            None
        );
        assert_eq!(
            fraction_in_integer(text, &ron::Error::ExpectedComma, 1, 3),
            None
        );
    }

    #[test]
    fn missing_comma_hint_only_at_line_start() {
        let text = "(a: 1\n  b: 2)";
        let m = explain(text, &ron::Error::ExpectedComma, 2, 3);
        assert_eq!(m, "Expected comma (missing at the end of line 1?)");
        let m = explain("(a: 1 b: 2)", &ron::Error::ExpectedComma, 1, 7);
        assert_eq!(m, "Expected comma");
    }

    #[test]
    fn a_file_wins_over_a_bundled_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.ron");
        std::fs::write(&path, "Profile(name: \"mine\")").unwrap();
        let l = load(path.to_str().unwrap()).unwrap();
        assert_eq!(l.profile.name, "mine");
        assert_eq!(l.origin, Origin::File(path));
        assert_eq!(load("lab").unwrap().origin, Origin::Bundled("lab"));
    }
}
