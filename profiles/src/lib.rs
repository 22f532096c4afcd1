//! `profiles`: the RON profile language of rtvirt.
//!
//! A profile says how to tune the host (`host`), what to measure in the guest (`guest`),
//! which CAN matrix to simulate (`can`) and which timing requirements the evidence must
//! show (`requirements`). [`load`] takes a path or a bundled name (`ecu` means the
//! embedded `profiles/ecu.ron`), parses it with field paths in errors, and validates it.

pub mod schema;
pub mod validate;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use schema::*;
pub use validate::{validate, validate_against, ValidationError};

/// The bundled profiles: (name, RON text).
pub const BUNDLED: &[(&str, &str)] = &[
    ("ecu", include_str!("../ecu.ron")),
    ("lab", include_str!("../lab.ron")),
    ("canfd", include_str!("../canfd.ron")),
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

/// Parse RON text into a [`Profile`] without semantic validation.
pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
    let mut de = ron::de::Deserializer::from_str(text).map_err(|e| syntax(origin, &e, "."))?;
    let result: Result<Profile, _> = serde_path_to_error::deserialize(&mut de);
    match result {
        Ok(p) => {
            de.end().map_err(|e| {
                syntax(
                    origin,
                    &ron::error::SpannedError {
                        code: e,
                        span: de_span(text),
                    },
                    ".",
                )
            })?;
            Ok(p)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let spanned = de.span_error(inner);
            Err(syntax(origin, &spanned, &path))
        }
    }
}

fn de_span(text: &str) -> ron::error::Span {
    let line = text.lines().count().max(1);
    let col = text.lines().last().map_or(1, |l| l.len() + 1);
    let pos = ron::error::Position { line, col };
    ron::error::Span {
        start: pos,
        end: pos,
    }
}

fn syntax(origin: &str, e: &ron::error::SpannedError, path: &str) -> ProfileError {
    ProfileError::Syntax {
        origin: origin.to_string(),
        line: e.span.start.line,
        column: e.span.start.col,
        path: path.to_string(),
        message: e.code.to_string(),
    }
}

/// Load a profile by path, or by bundled name (`ecu`, `lab`, `canfd`, with or without
/// `.ron`) when no such file exists, and validate it.
pub fn load(name_or_path: &str) -> Result<Loaded, ProfileError> {
    let path = Path::new(name_or_path);
    let (text, origin) = if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        (text, Origin::File(path.to_path_buf()))
    } else {
        let stem = name_or_path.strip_suffix(".ron").unwrap_or(name_or_path);
        let stem = stem.rsplit('/').next().unwrap_or(stem);
        match BUNDLED.iter().find(|(n, _)| *n == stem) {
            Some((n, t)) if !name_or_path.contains('/') || !path.exists() => {
                ((*t).to_string(), Origin::Bundled(n))
            }
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
