//! W3C trace context towards the appliance.

/// The W3C `traceparent` for the appliance request: the caller's trace continued with a new
/// parent id (this gateway's hop), or a new trace when the caller sent none or a malformed one.
pub fn upstream_traceparent(incoming: Option<&str>) -> String {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let span_id = format!("{:016x}", rand::random::<u64>() | 1);
    let incoming = incoming.and_then(|v| {
        let parts: Vec<&str> = v.trim().split('-').collect();
        match parts.as_slice() {
            [version, trace, parent, flags]
                if hex(version, 2)
                    && *version != "ff"
                    && hex(trace, 32)
                    && trace.bytes().any(|b| b != b'0')
                    && hex(parent, 16)
                    && hex(flags, 2) =>
            {
                Some((trace.to_string(), flags.to_string()))
            }
            _ => None,
        }
    });
    let (trace_id, flags) = incoming.unwrap_or_else(|| {
        (
            format!("{:032x}", rand::random::<u128>() | 1),
            "01".to_owned(),
        )
    });
    format!("00-{trace_id}-{span_id}-{flags}")
}

#[cfg(test)]
mod tests {
    use super::upstream_traceparent;

    #[test]
    fn the_callers_trace_continues() {
        let tp = upstream_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        assert!(!tp.contains("00f067aa0ba902b7"), "a new parent id");
        assert_eq!(upstream_traceparent(Some("garbage")).len(), 55);
        assert_eq!(upstream_traceparent(None).len(), 55);
    }
}
