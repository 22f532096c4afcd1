//! Tokens of a DBC file (Vector's CAN database format), with their line and column.
//!
//! A DBC file is a sequence of keyword statements (`BO_`, `SG_`, `BA_`, ...) made of
//! words (identifiers and unsigned integers), numbers (with sign, fraction or exponent),
//! double-quoted strings (which may span lines) and punctuation (`: | @ + - ( ) [ ] , ;`).
//! `//` starts a comment that runs to the end of the line. Whitespace and line ends only
//! separate tokens, except that a few statements (`NS_`, `BS_`, `BU_`, signal receivers)
//! end with their line: each token says whether it is the first on its line and its
//! column, which is what the parser needs for those.

use std::fmt;

/// A place in the text: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tok<'a> {
    /// Letters, digits and `_` (keywords, names, unsigned integers such as message ids).
    Word(&'a str),
    /// A number with a sign, a fraction or an exponent (`-40`, `0.25`, `1E-005`).
    Num(&'a str),
    /// The text between double quotes (a `\"` inside stays as written).
    Str(&'a str),
    /// Any other character.
    Punct(char),
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) | Tok::Num(w) => write!(f, "{w:?}"),
            Tok::Str(s) => {
                let short: String = s.chars().take(30).collect();
                write!(f, "the string \"{short}\"")
            }
            Tok::Punct(c) => write!(f, "'{c}'"),
        }
    }
}

/// One token and where it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Token<'a> {
    /// The token.
    pub tok: Tok<'a>,
    /// Where it starts.
    pub pos: Pos,
    /// True when no other token precedes it on its line.
    pub first_on_line: bool,
}

/// A string that is never closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated {
    /// Where the string opens.
    pub pos: Pos,
}

/// The tokens of a text, in order.
pub struct Lexer<'a> {
    src: &'a str,
    i: usize,
    line: u32,
    line_start: usize,
    last_token_line: u32,
    /// Column cache: byte offset on the current line already counted, and its column.
    col_byte: usize,
    col_chars: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Lexer<'a> {
    /// Tokens of `src`.
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            i: 0,
            line: 1,
            line_start: 0,
            last_token_line: 0,
            col_byte: 0,
            col_chars: 0,
        }
    }

    /// Position of byte `i` on the current line (counted on from the last position asked
    /// for, so a long line costs its length once, not once per token).
    fn pos_at(&mut self, i: usize) -> Pos {
        if self.col_byte < self.line_start || self.col_byte > i {
            self.col_byte = self.line_start;
            self.col_chars = 0;
        }
        self.col_chars += self.src[self.col_byte..i].chars().count();
        self.col_byte = i;
        let col = self.col_chars + 1;
        Pos {
            line: self.line,
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }

    fn newline(&mut self, at: usize) {
        self.line += 1;
        self.line_start = at + 1;
    }

    /// Skip whitespace and `//` comments.
    fn skip_blank(&mut self) {
        let b = self.src.as_bytes();
        while self.i < b.len() {
            match b[self.i] {
                b'\n' => {
                    self.newline(self.i);
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' | 0x0C => self.i += 1,
                b'/' if b.get(self.i + 1) == Some(&b'/') => {
                    while self.i < b.len() && b[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// Length of the number starting at `i` (digits, fraction, exponent; no sign), 0 if
    /// none.
    fn number_len(&self, i: usize) -> usize {
        let b = self.src.as_bytes();
        let digits = |mut j: usize| {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            j
        };
        let mut j = digits(i);
        let int_digits = j - i;
        if j < b.len() && b[j] == b'.' {
            let k = digits(j + 1);
            if k > j + 1 || int_digits > 0 {
                j = k;
            }
        }
        if j == i || (j == i + 1 && b[i] == b'.') {
            return 0;
        }
        if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
            let mut k = j + 1;
            if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
                k += 1;
            }
            let e = digits(k);
            if e > k {
                j = e;
            }
        }
        j - i
    }

    fn token(&mut self) -> Result<Option<Token<'a>>, Unterminated> {
        self.skip_blank();
        let b = self.src.as_bytes();
        if self.i >= b.len() {
            return Ok(None);
        }
        let start = self.i;
        let pos = self.pos_at(start);
        let first_on_line = self.last_token_line != self.line;
        let c = b[start];
        let tok = if c == b'"' {
            let mut j = start + 1;
            loop {
                match b.get(j) {
                    None => return Err(Unterminated { pos }),
                    Some(b'\\') if b.get(j + 1) == Some(&b'"') => j += 2,
                    Some(b'"') => break,
                    Some(b'\n') => {
                        self.newline(j);
                        j += 1;
                    }
                    Some(_) => j += 1,
                }
            }
            self.i = j + 1;
            Tok::Str(&self.src[start + 1..j])
        } else if (c == b'+' || c == b'-') && self.number_len(start + 1) > 0 {
            self.i = start + 1 + self.number_len(start + 1);
            Tok::Num(&self.src[start..self.i])
        } else if c.is_ascii_digit() || (c == b'.' && self.number_len(start) > 0) {
            let n = self.number_len(start);
            let end = start + n;
            let plain = self.src[start..end].bytes().all(|d| d.is_ascii_digit());
            if end < b.len() && is_word_byte(b[end]) || plain {
                // A name that starts with a digit (`3Sig`), or an unsigned integer.
                let mut j = start;
                while j < b.len() && is_word_byte(b[j]) {
                    j += 1;
                }
                if j > end || plain {
                    self.i = j.max(end);
                    return Ok(Some(Token {
                        tok: Tok::Word(&self.src[start..self.i]),
                        pos,
                        first_on_line,
                    }));
                }
            }
            self.i = end;
            Tok::Num(&self.src[start..end])
        } else if is_word_byte(c) {
            let mut j = start;
            while j < b.len() && is_word_byte(b[j]) {
                j += 1;
            }
            self.i = j;
            Tok::Word(&self.src[start..j])
        } else {
            let ch = self.src[start..].chars().next().unwrap_or('?');
            self.i = start + ch.len_utf8();
            Tok::Punct(ch)
        };
        Ok(Some(Token {
            tok,
            pos,
            first_on_line,
        }))
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Result<Token<'a>, Unterminated>;

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.token().transpose();
        // The line a token ends on (a string may span lines).
        self.last_token_line = self.line;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        Lexer::new(s).map(|t| t.unwrap().tok).collect()
    }

    #[test]
    fn signal_line_tokens() {
        let t = toks(r#" SG_ Temp m3M : 39|12@0- (0.1,-40) [-1E-005|2.5e+3] "degC" A,B"#);
        use Tok::*;
        assert_eq!(
            t,
            vec![
                Word("SG_"),
                Word("Temp"),
                Word("m3M"),
                Punct(':'),
                Word("39"),
                Punct('|'),
                Word("12"),
                Punct('@'),
                Word("0"),
                Punct('-'),
                Punct('('),
                Num("0.1"),
                Punct(','),
                Num("-40"),
                Punct(')'),
                Punct('['),
                Num("-1E-005"),
                Punct('|'),
                Num("2.5e+3"),
                Punct(']'),
                Str("degC"),
                Word("A"),
                Punct(','),
                Word("B"),
            ]
        );
    }

    #[test]
    fn names_with_leading_digits_and_plus_signs() {
        use Tok::*;
        assert_eq!(
            toks("3Sig 12 1+ .5 1e 7."),
            vec![
                Word("3Sig"),
                Word("12"),
                Word("1"),
                Punct('+'),
                Num(".5"),
                Word("1e"),
                Num("7."),
            ]
        );
    }

    #[test]
    fn positions_lines_and_comments() {
        let src = "BO_ 1 A: 8 X // comment\n  SG_ s\n\"multi\nline\" BA_\n";
        let t: Vec<Token> = Lexer::new(src).map(|t| t.unwrap()).collect();
        assert_eq!(t[0].pos, Pos { line: 1, col: 1 });
        assert!(t[0].first_on_line);
        assert!(!t[1].first_on_line);
        assert_eq!(t[6].tok, Tok::Word("SG_"));
        assert_eq!(t[6].pos, Pos { line: 2, col: 3 });
        assert!(t[6].first_on_line);
        assert_eq!(t[8].tok, Tok::Str("multi\nline"));
        assert_eq!(t[8].pos, Pos { line: 3, col: 1 });
        // After a string spanning lines, positions continue on the right line.
        assert_eq!(t[9].pos, Pos { line: 4, col: 7 });
        assert!(!t[9].first_on_line);
    }

    #[test]
    fn unterminated_string_names_its_start() {
        let r: Result<Vec<Token>, Unterminated> = Lexer::new("CM_ BO_ 1\n  \"open").collect();
        assert_eq!(
            r.unwrap_err(),
            Unterminated {
                pos: Pos { line: 2, col: 3 }
            }
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_the_string() {
        assert_eq!(
            toks(r#""a \"b\" c";"#),
            vec![Tok::Str(r#"a \"b\" c"#), Tok::Punct(';')]
        );
    }
}
