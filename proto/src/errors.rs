//! Errors as one line for a log or a reason string.

use std::error::Error;

/// An error and its sources, `outer: inner: innermost`; a source whose text the outer ones
/// already hold is not repeated.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("sending to 224.0.0.18 failed")]
    struct Send(#[source] std::io::Error);

    #[test]
    fn the_sources_follow_the_error_once_each() {
        let error = Send(std::io::Error::other("operation not permitted"));
        assert_eq!(
            chain(&error),
            "sending to 224.0.0.18 failed: operation not permitted"
        );
        let io = std::io::Error::other("disk full");
        assert_eq!(chain(&io), "disk full");
    }
}
