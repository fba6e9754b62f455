//! [`InstanceView`] written as JSON by hand, byte for byte what its `Serialize` derive
//! writes: a 10,000-id `health:batchGet` answer is about two megabytes, and serde spends
//! most of its time escaping the ten keys of every view, which are constants here.

use crate::InstanceView;

impl InstanceView<'_> {
    /// Appends the view's JSON object to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut numbers = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":");
        string(out, self.id);
        out.extend_from_slice(b",\"appInstance\":");
        string(out, self.app_instance);
        out.extend_from_slice(b",\"component\":");
        string(out, self.component);
        out.extend_from_slice(b",\"plugin\":");
        string(out, self.plugin);
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.extend_from_slice(b"\",\"reason\":");
        string(out, self.reason);
        out.extend_from_slice(b",\"sinceMs\":");
        out.extend_from_slice(numbers.format(self.since_ms).as_bytes());
        out.extend_from_slice(b",\"checkedAtMs\":");
        out.extend_from_slice(numbers.format(self.checked_at_ms).as_bytes());
        out.extend_from_slice(if self.flapping { b",\"flapping\":true" } else { b",\"flapping\":false" });
        out.extend_from_slice(b",\"intervalMs\":");
        out.extend_from_slice(numbers.format(self.interval_ms).as_bytes());
        out.push(b'}');
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping (ids, names and
/// most reasons), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("a string serialises into a Vec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;

    fn view<'a>(reason: &'a str, status: Health, flapping: bool) -> InstanceView<'a> {
        InstanceView {
            id: "i1/web",
            app_instance: "shop-ü-1",
            component: "web",
            plugin: "http",
            status,
            reason,
            since_ms: -5,
            checked_at_ms: 1_764_000_000_123,
            flapping,
            interval_ms: u64::MAX,
        }
    }

    #[test]
    fn writes_what_serde_writes() {
        let reasons = ["HTTP 200 in 1 ms", "GET \"http://h/\": reset\nby peer\\", "tab\there \u{7f} é", ""];
        for (k, status) in Health::ALL.into_iter().enumerate() {
            let v = view(reasons[k % reasons.len()], status, k % 2 == 0);
            let mut out = Vec::new();
            v.write_json(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
        }
    }
}
