//! Token counts from a model server's response: the OpenAI `usage` object, found in the tail of
//! a JSON body or in the last SSE event of a stream (`stream_options.include_usage`).

use memchr::memmem;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "cached")]
    pub prompt_tokens_details: u64,
}

fn cached<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: Option<u64>,
    }
    Ok(Option::<Details>::deserialize(d)?
        .and_then(|x| x.cached_tokens)
        .unwrap_or(0))
}

impl Usage {
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
    }
}

/// The last non-null `"usage": {...}` object in `tail`, if one is complete there.
pub fn find_usage(tail: &[u8]) -> Option<Usage> {
    find_usage_as(tail)
}

/// `find_usage` with every field the object has, for expressions over it.
pub fn find_usage_object(tail: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    find_usage_as(tail)
}

fn find_usage_as<T: serde::de::DeserializeOwned>(tail: &[u8]) -> Option<T> {
    let finder = memmem::FinderRev::new(b"\"usage\"");
    let mut end = tail.len();
    while let Some(at) = finder.rfind(&tail[..end]) {
        let rest = &tail[at + 7..];
        let colon = rest.iter().position(|b| !b.is_ascii_whitespace());
        if let Some(i) = colon.filter(|&i| rest[i] == b':') {
            let mut values = serde_json::Deserializer::from_slice(&rest[i + 1..]).into_iter();
            if let Some(Ok(usage)) = values.next() {
                return Some(usage);
            }
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_at_the_end_of_a_completion() {
        let body = br#"{"id":"x","choices":[{"text":"hi"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        let u = find_usage(body).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
            (12, 3, 0)
        );
    }

    #[test]
    fn reads_cached_tokens_from_prompt_tokens_details() {
        let body = br#"{"usage": {"prompt_tokens":40,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":32}}}"#;
        assert_eq!(find_usage(body).unwrap().cached_tokens(), 32);
    }

    #[test]
    fn skips_null_usage_of_earlier_sse_events_and_takes_the_last() {
        let sse = b"data: {\"choices\":[],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";
        assert_eq!(find_usage(sse).unwrap().completion_tokens, 7);
        let only_null = b"data: {\"usage\":null}\n\n";
        assert_eq!(find_usage(only_null), None);
    }

    #[test]
    fn an_object_cut_by_the_tail_is_not_read() {
        assert_eq!(find_usage(br#"{"usage":{"prompt_tokens":5,"compl"#), None);
        assert_eq!(find_usage(b""), None);
    }
}
