//! keepalived.conf tokens: words (with quotes removed and escapes resolved), `{` and `}`, each
//! with the line it starts on.
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

/// The tokens of one physical line, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub tokens: Vec<Token>,
    /// The words of the line with braces kept inside words, as `include` patterns need
    /// (`conf.d/*.{conf,inc}`).
    pub words_with_braces: Vec<String>,
}

/// A line that cannot be tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

/// Splits `text` into lines of tokens, leaving out lines with none.
pub fn tokenize(text: &str) -> Result<Vec<Line>, LexError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let error = |message| LexError {
            line: number,
            message,
        };
        let tokens = tokenize_line(raw, true).map_err(error)?;
        if !tokens.is_empty() {
            let words_with_braces = tokenize_line(raw, false)
                .map_err(error)?
                .into_iter()
                .filter_map(|token| match token {
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

/// The tokens of one line; with `braces_are_tokens` false, braces are part of words.
fn tokenize_line(line: &str, braces_are_tokens: bool) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let flush =
        |tokens: &mut Vec<Token>, word: &mut String, in_word: &mut bool, quoted: &mut bool| {
            if *in_word {
                tokens.push(Token::Word {
                    text: std::mem::take(word),
                    quoted: *quoted,
                });
            }
            *in_word = false;
            *quoted = false;
        };
    while let Some(c) = chars.next() {
        match c {
            '#' | '!' => break,
            '{' if braces_are_tokens => {
                flush(&mut tokens, &mut word, &mut in_word, &mut quoted);
                tokens.push(Token::Open);
            }
            '}' if braces_are_tokens => {
                flush(&mut tokens, &mut word, &mut in_word, &mut quoted);
                tokens.push(Token::Close);
            }
            '"' | '\'' => {
                in_word = true;
                quoted = true;
                let close = c;
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!(
                                "unterminated quoted string (a {close} is missing before the end of the line)"
                            ));
                        }
                        Some(end) if end == close => break,
                        Some('\\') => word.push(escape(&mut chars)?),
                        Some(other) => word.push(other),
                    }
                }
            }
            c if c.is_whitespace() => flush(&mut tokens, &mut word, &mut in_word, &mut quoted),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    flush(&mut tokens, &mut word, &mut in_word, &mut quoted);
    Ok(tokens)
}

/// The character an escape inside quotes stands for; the backslash has been read.
fn escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let Some(c) = chars.next() else {
        return Err("a backslash ends the line inside a quoted string".into());
    };
    Ok(match c {
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
            char::from_u32(value).unwrap_or('\u{fffd}')
        }
        '0'..='7' => {
            let mut value = c.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                match chars.peek().and_then(|d| d.to_digit(8)) {
                    Some(digit) => {
                        value = value * 8 + digit;
                        chars.next();
                    }
                    None => break,
                }
            }
            char::from_u32(value).unwrap_or('\u{fffd}')
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize_line(line, true)
            .unwrap_or_default()
            .into_iter()
            .map(|token| match token {
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
                assert_eq!(error.line, 2);
                assert!(error.message.contains("unterminated"), "{}", error.message);
            }
            Ok(lines) => panic!("{lines:?}"),
        }
    }
}
