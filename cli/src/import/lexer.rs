//! keepalived.conf tokens: words (with quotes removed and escapes resolved), `{` and `}`, each
//! with the line and column it starts at.
//!
//! The rules are keepalived's: `#` and `!` outside quotes start a comment that runs to the end of
//! the line; `"` and `'` quote anywhere inside a word and may not span lines; inside quotes a
//! backslash escapes the next character (`\n`, `\t`, `\xHH`, `\NNN` octal, otherwise the character
//! itself); braces outside quotes are tokens of their own. Lexing never panics: bad input is an
//! error naming the line.

/// One token of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A word; `quoted` when any part of it was inside quotes (so `"{"` is a word, not a brace).
    Word {
        text: String,
        quoted: bool,
    },
    Open,
    Close,
}

/// A token and the 1-based column (in characters) it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    pub token: Token,
    pub column: usize,
}

/// The tokens of one physical line, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub tokens: Vec<Spanned>,
    /// The words of the line with braces kept inside words, as `include` patterns need
    /// (`conf.d/*.{conf,inc}`).
    pub words_with_braces: Vec<String>,
}

/// A line that cannot be tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    /// 1-based column of the character that starts the problem (the opening quote).
    pub column: usize,
    pub message: String,
}

/// Splits `text` into lines of tokens, leaving out lines with none.
pub fn tokenize(text: &str) -> Result<Vec<Line>, LexError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let error = |(column, message)| LexError {
            line: number,
            column,
            message,
        };
        let tokens = tokenize_line(raw, true).map_err(error)?;
        if !tokens.is_empty() {
            let words_with_braces = tokenize_line(raw, false)
                .map_err(error)?
                .into_iter()
                .filter_map(|spanned| match spanned.token {
                    Token::Word { text, .. } => Some(text),
                    Token::Open | Token::Close => None,
                })
                .collect();
            lines.push(Line {
                number,
                tokens,
                words_with_braces,
            });
        }
    }
    Ok(lines)
}

/// The tokens of one line; with `braces_are_tokens` false, braces are part of words. An error
/// names the column where the problem starts.
fn tokenize_line(line: &str, braces_are_tokens: bool) -> Result<Vec<Spanned>, (usize, String)> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    let mut column = 0;
    let mut word = Word::default();
    while let Some(c) = chars.next() {
        column += 1;
        match c {
            '#' | '!' => break,
            '{' | '}' if braces_are_tokens => {
                word.flush(&mut tokens);
                tokens.push(Spanned {
                    token: if c == '{' { Token::Open } else { Token::Close },
                    column,
                });
            }
            '"' | '\'' => {
                let opened_at = column;
                word.start(column);
                word.quoted = true;
                let close = c;
                loop {
                    let Some(next) = chars.next() else {
                        return Err((
                            opened_at,
                            format!(
                                "unterminated quoted string (a {close} is missing before the end \
                                 of the line)"
                            ),
                        ));
                    };
                    column += 1;
                    match next {
                        end if end == close => break,
                        '\\' => {
                            let (escaped, used) = escape(&mut chars).map_err(|m| (column, m))?;
                            column += used;
                            word.text.push(escaped);
                        }
                        other => word.text.push(other),
                    }
                }
            }
            c if c.is_whitespace() => word.flush(&mut tokens),
            c => {
                word.start(column);
                word.text.push(c);
            }
        }
    }
    word.flush(&mut tokens);
    Ok(tokens)
}

/// The word being read: its text, where it started, whether any of it was quoted.
#[derive(Default)]
struct Word {
    text: String,
    column: Option<usize>,
    quoted: bool,
}

impl Word {
    fn start(&mut self, column: usize) {
        self.column.get_or_insert(column);
    }

    fn flush(&mut self, tokens: &mut Vec<Spanned>) {
        if let Some(column) = self.column.take() {
            tokens.push(Spanned {
                token: Token::Word {
                    text: std::mem::take(&mut self.text),
                    quoted: self.quoted,
                },
                column,
            });
        }
        self.quoted = false;
    }
}

/// The character an escape inside quotes stands for, and how many characters after the
/// backslash it used; the backslash has been read.
fn escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<(char, usize), String> {
    let Some(c) = chars.next() else {
        return Err("a backslash ends the line inside a quoted string".into());
    };
    let mut used = 1;
    let escaped = match c {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'E' => '\u{1b}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        'x' => {
            let mut value = 0u32;
            let mut digits = 0;
            while digits < 2 {
                match chars.peek().and_then(|d| d.to_digit(16)) {
                    Some(digit) => {
                        value = value * 16 + digit;
                        chars.next();
                        digits += 1;
                    }
                    None => break,
                }
            }
            if digits == 0 {
                return Err("\\x without hex digits in a quoted string".into());
            }
            used += digits;
            char::from_u32(value).unwrap_or('\u{fffd}')
        }
        '0'..='7' => {
            let mut value = c.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                match chars.peek().and_then(|d| d.to_digit(8)) {
                    Some(digit) => {
                        value = value * 8 + digit;
                        chars.next();
                        used += 1;
                    }
                    None => break,
                }
            }
            char::from_u32(value).unwrap_or('\u{fffd}')
        }
        other => other,
    };
    Ok((escaped, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize_line(line, true)
            .unwrap_or_default()
            .into_iter()
            .map(|spanned| match spanned.token {
                Token::Word { text, .. } => text,
                Token::Open => "{".into(),
                Token::Close => "}".into(),
            })
            .collect()
    }

    #[test]
    fn quotes_join_and_split_as_keepalived_documents() {
        assert_eq!(words(r#"abcd" efg h jkl "mnop"#), ["abcd efg h jkl mnop"]);
        assert_eq!(
            words(r#"abcd "efg h jkl" mnop"#),
            ["abcd", "efg h jkl", "mnop"]
        );
        assert_eq!(words(r#"x "a\"b\x41\101\n""#), ["x", "a\"bAA\n"]);
    }

    #[test]
    fn comments_and_braces() {
        assert_eq!(
            words("vrrp_instance VI_1{ # comment"),
            ["vrrp_instance", "VI_1", "{"]
        );
        assert_eq!(words("group { A B } ! x"), ["group", "{", "A", "B", "}"]);
        assert_eq!(words(r#"script "a # b""#), ["script", "a # b"]);
        assert!(words("   ! only a comment").is_empty());
    }

    #[test]
    fn unterminated_quote_names_the_line() {
        match tokenize("a\nb \"c\n") {
            Err(error) => {
                assert_eq!((error.line, error.column), (2, 3));
                assert!(error.message.contains("unterminated"), "{}", error.message);
            }
            Ok(lines) => panic!("{lines:?}"),
        }
    }

    #[test]
    fn tokens_carry_the_column_they_start_at() {
        let columns: Vec<(String, usize)> = tokenize_line("  state \"MA\\x41\"{x}", true)
            .unwrap_or_default()
            .into_iter()
            .map(|spanned| match spanned.token {
                Token::Word { text, .. } => (text, spanned.column),
                Token::Open => ("{".into(), spanned.column),
                Token::Close => ("}".into(), spanned.column),
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("state".into(), 3),
                ("MAA".into(), 9),
                ("{".into(), 17),
                ("x".into(), 18),
                ("}".into(), 19)
            ]
        );
    }
}
