//! keepalived's command strings as programs and arguments, without a shell; and the classic
//! shell checks (`killall -0 NAME`, `pidof NAME`, `</dev/tcp/HOST/PORT`) recognised for what they
//! test, so they become hav's built-in process tracking and TCP probes.

use std::net::IpAddr;

/// Characters that mean something to a shell; a command holding one outside quotes needs a
/// human to turn it into a program and arguments.
const SHELL_SPECIAL: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '*', '?', '[', ']', '~', '{', '}', '#',
];

/// Splits a command string into argv as a shell would for plain words and quotes, without a
/// shell; anything else (pipes, redirections, variables, globs) is refused with the reason.
pub(crate) fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(format!("unbalanced {c} in {command:?}")),
                        Some(end) if end == c => break,
                        Some(special @ ('$' | '`' | '\\')) if c == '"' => {
                            return Err(format!(
                                "{special:?} inside double quotes in {command:?} needs a shell; \
                                 review and write the program and its arguments"
                            ));
                        }
                        Some(other) => word.push(other),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c if SHELL_SPECIAL.contains(&c) => {
                return Err(format!(
                    "shell syntax ({c:?}) in {command:?}: hav runs programs without a shell; \
                     review and write the program and its arguments (or a wrapper script)"
                ));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        argv.push(word);
    }
    if argv.is_empty() {
        return Err("empty command".into());
    }
    if argv[0].contains('=') {
        return Err(format!(
            "{command:?} sets a variable for the shell; review and write a wrapper script"
        ));
    }
    Ok(argv)
}

/// `</dev/tcp/HOST/PORT` (bash's TCP connect): the address and port, for a tcp probe.
pub(crate) fn dev_tcp(command: &str) -> Option<(IpAddr, u16)> {
    let rest = command.trim().strip_prefix('<')?.trim_start();
    let rest = rest.strip_prefix("/dev/tcp/")?;
    let (host, port) = rest.trim_end().split_once('/')?;
    let address = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        host => host.parse().ok()?,
    };
    Some((address, port.parse().ok()?))
}

/// `killall -0 NAME` and `pidof NAME` (the classic process checks) as the command name watched.
pub(crate) fn process_check(argv: &[String]) -> Option<String> {
    let program = argv.first()?;
    let base = program.rsplit('/').next().unwrap_or(program);
    let name = match (base, &argv[1..]) {
        ("killall", [signal, name]) if signal == "-0" => name,
        ("pidof", [name]) => name,
        _ => return None,
    };
    (!name.is_empty() && name.len() <= 15 && !name.contains('/') && !name.starts_with('-'))
        .then(|| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_without_a_shell() {
        assert_eq!(
            split_command("/usr/local/bin/notify.sh 'a b' \"c d\" e").ok(),
            Some(vec![
                "/usr/local/bin/notify.sh".into(),
                "a b".into(),
                "c d".into(),
                "e".into()
            ])
        );
        for shell in [
            "/bin/check | grep x",
            "/bin/a && /bin/b",
            "/bin/a > /dev/null",
            "/bin/echo $HOME",
            "FOO=1 /bin/a",
            "/bin/a \"$X\"",
            "/bin/a 'unbalanced",
        ] {
            assert!(split_command(shell).is_err(), "{shell}");
        }
    }

    #[test]
    fn classic_checks() {
        assert_eq!(
            dev_tcp("</dev/tcp/127.0.0.1/80"),
            Some((IpAddr::from([127, 0, 0, 1]), 80))
        );
        let argv = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            process_check(&argv("/usr/bin/killall -0 haproxy")),
            Some("haproxy".into())
        );
        assert_eq!(
            process_check(&argv("/bin/pidof nginx")),
            Some("nginx".into())
        );
        assert_eq!(process_check(&argv("/usr/bin/killall haproxy")), None);
    }
}
