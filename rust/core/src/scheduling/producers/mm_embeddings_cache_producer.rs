//! mm-embeddings-cache-producer: which endpoints recently encoded each image, video or audio
//! item of a request, so a scorer can send the item back where its embeddings are likely still
//! cached. Items are keyed as upstream's tokenizer-free `estimate` backend keys them: XXH64 of
//! the image or video URL (a `data:` URL included), of an audio part's data and format, or of an
//! Anthropic image's URL or base64 data; one entry per item whatever its repeats. Each endpoint
//! keeps an LRU of `cacheSizeInMBPerServer` / 2 MiB items (upstream's fixed per-item size);
//! `mm-embeddings-cache-scorer` reads it and records where the request went.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use xxhash_rust::xxh64::xxh64;

use crate::prefix::PrefixIndex;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;

/// Upstream's default budget: 4 GiB of encoder cache per endpoint.
const DEFAULT_CACHE_MB: i64 = 4096;

/// Upstream's assumed encoder-cache footprint of one item.
const MB_PER_ITEM: i64 = 2;

/// Anthropic tool results name their images as data URLs of this type when they say none.
const DEFAULT_IMAGE_MEDIA_TYPE: &str = "image/jpeg";

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct MmParams {
    /// Per-endpoint budget in MiB; <= 0 or absent takes the default (as upstream).
    #[serde(rename = "cacheSizeInMBPerServer")]
    cache_size_in_mb_per_server: i64,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: MmParams = p.parse()?;
    let producer = MmEmbeddingsProducer::new(params.cache_size_in_mb_per_server);
    Ok(Plugin::MmEmbeddings(Arc::new(producer)))
}

/// Items remembered per endpoint for a budget in MiB.
pub fn capacity(mb: i64) -> usize {
    let mb = if mb <= 0 { DEFAULT_CACHE_MB } else { mb };
    (mb / MB_PER_ITEM).max(1) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Image,
    Video,
    Audio,
}

/// One distinct multimodal item of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaItem {
    pub hash: u64,
    pub modality: Modality,
}

pub struct MmEmbeddingsProducer {
    /// Per endpoint, the items routed there (an LRU set; item hashes have no order here).
    index: PrefixIndex,
}

impl MmEmbeddingsProducer {
    pub fn new(cache_size_mb: i64) -> Self {
        MmEmbeddingsProducer {
            index: PrefixIndex::new(capacity(cache_size_mb)),
        }
    }

    /// How many of `items` the endpoint with this id is thought to hold.
    pub fn matched(&self, endpoint: u64, items: &[MediaItem]) -> usize {
        let hashes: Vec<u64> = items.iter().map(|i| i.hash).collect();
        self.index.count_held(endpoint, &hashes)
    }

    /// The request's items were sent to this endpoint (upstream's PreRequest).
    pub fn record(&self, endpoint: u64, items: &[MediaItem]) {
        let hashes: Vec<u64> = items.iter().map(|i| i.hash).collect();
        self.index.insert(endpoint, &hashes, None);
    }

    pub fn remove_endpoint(&self, endpoint: u64) {
        self.index.remove_endpoint(endpoint);
    }

    /// Items remembered for the endpoint with this id.
    pub fn len(&self, endpoint: u64) -> usize {
        self.index.len(endpoint)
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// The distinct multimodal items of a chat-completions or Anthropic messages body, in order of
/// first appearance; none for other bodies.
pub fn request_items(body: &[u8]) -> Vec<MediaItem> {
    const HINTS: [&[u8]; 5] = [
        b"image_url",
        b"video_url",
        b"audio",
        b"\"image\"",
        b"tool_result",
    ];
    if !HINTS
        .iter()
        .any(|h| memchr::memmem::find(body, h).is_some())
    {
        return Vec::new();
    }
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut items = Vec::new();
    if let Some(Value::Array(messages)) = root.get("messages") {
        for m in messages {
            if let Some(Value::Array(blocks)) = m.get("content") {
                blocks.iter().for_each(|b| block_items(b, &mut items));
            }
        }
    }
    items
}

fn push(items: &mut Vec<MediaItem>, modality: Modality, content: &str) {
    let hash = xxh64(content.as_bytes(), 0);
    if !items.iter().any(|i| i.hash == hash) {
        items.push(MediaItem { hash, modality });
    }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// One content block: OpenAI's typed media parts, Anthropic's image blocks and the images in
/// its tool results.
fn block_items(block: &Value, items: &mut Vec<MediaItem>) {
    match text(block, &["type"]) {
        "image_url" => push(items, Modality::Image, text(block, &["image_url", "url"])),
        "video_url" => push(items, Modality::Video, text(block, &["video_url", "url"])),
        "input_audio" | "audio_url" => {
            let data = text(block, &["input_audio", "data"]);
            let format = text(block, &["input_audio", "format"]);
            push(items, Modality::Audio, &format!("{data}{format}"));
        }
        "image" => {
            let url = text(block, &["source", "url"]);
            let data = text(block, &["source", "data"]);
            match (url, data) {
                ("", "") => {}
                ("", data) => push(items, Modality::Image, data),
                (url, _) => push(items, Modality::Image, url),
            }
        }
        "tool_result" => {
            let Some(Value::Array(parts)) = block.get("content") else {
                return;
            };
            for part in parts.iter().filter(|p| text(p, &["type"]) == "image") {
                if let Some(url) = data_url(part.get("source").unwrap_or(&Value::Null)) {
                    push(items, Modality::Image, &url);
                }
            }
        }
        _ => {}
    }
}

/// An Anthropic image source as the URL upstream renders it in a tool result.
fn data_url(source: &Value) -> Option<String> {
    let url = text(source, &["url"]);
    if text(source, &["type"]) == "url" || !url.is_empty() {
        return (!url.is_empty()).then(|| url.to_owned());
    }
    let data = text(source, &["data"]);
    if data.is_empty() {
        return None;
    }
    let media = match text(source, &["media_type"]) {
        "" => DEFAULT_IMAGE_MEDIA_TYPE,
        m => m,
    };
    Some(format!("data:{media};base64,{data}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(items: &[MediaItem]) -> Vec<String> {
        items.iter().map(|i| format!("{:x}", i.hash)).collect()
    }

    #[test]
    fn openai_parts_are_keyed_as_upstream_estimate_keys_them() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":[
            {"type":"text","text":"what is this"},
            {"type":"image_url","image_url":{"url":"https://x/cat.png"}},
            {"type":"video_url","video_url":{"url":"https://x/v.mp4"}},
            {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}},
            {"type":"image_url","image_url":{"url":"https://x/cat.png"}}]}]}"#;
        let items = request_items(body);
        let modalities: Vec<Modality> = items.iter().map(|i| i.modality).collect();
        assert_eq!(
            modalities,
            vec![Modality::Image, Modality::Video, Modality::Audio]
        );
        // Upstream: strconv.FormatUint(xxhash.Sum64String(content), 16).
        assert_eq!(
            hex(&items),
            vec![
                format!("{:x}", xxh64(b"https://x/cat.png", 0)),
                format!("{:x}", xxh64(b"https://x/v.mp4", 0)),
                format!("{:x}", xxh64(b"AAAAwav", 0)),
            ]
        );
        // XXH64 of the empty input, a published test vector: the keys are plain seed-0 XXH64.
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
    }

    #[test]
    fn anthropic_images_and_tool_result_images_are_items() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}},
            {"type":"image","source":{"type":"url","url":"https://x/a.png"}},
            {"type":"tool_result","tool_use_id":"t","content":[
                {"type":"text","text":"shot"},
                {"type":"image","source":{"type":"base64","data":"R0lG"}}]}]}]}"#;
        let items = request_items(body);
        assert_eq!(
            hex(&items),
            vec![
                format!("{:x}", xxh64(b"iVBOR", 0)),
                format!("{:x}", xxh64(b"https://x/a.png", 0)),
                format!("{:x}", xxh64(b"data:image/jpeg;base64,R0lG", 0)),
            ]
        );
    }

    #[test]
    fn text_only_and_other_bodies_have_no_items() {
        assert!(
            request_items(br#"{"messages":[{"role":"user","content":"an image_url"}]}"#).is_empty()
        );
        assert!(request_items(br#"{"prompt":"image_url"}"#).is_empty());
        assert!(request_items(b"not json image_url").is_empty());
    }

    #[test]
    fn the_budget_is_counted_in_two_mib_items() {
        assert_eq!(capacity(0), 2048);
        assert_eq!(capacity(-5), 2048);
        assert_eq!(capacity(2048), 1024);
        assert_eq!(capacity(1), 1);
    }

    #[test]
    fn an_endpoint_holds_what_was_recorded_until_evicted() {
        let p = MmEmbeddingsProducer::new(4); // two items per endpoint
        let item = |h| MediaItem {
            hash: h,
            modality: Modality::Image,
        };
        p.record(1, &[item(10), item(11)]);
        assert_eq!(p.matched(1, &[item(11), item(12), item(10)]), 2);
        assert_eq!(p.matched(2, &[item(10)]), 0);
        p.record(1, &[item(12)]);
        assert_eq!(p.len(1), 2);
        assert_eq!(p.matched(1, &[item(10), item(11), item(12)]), 2);
        p.remove_endpoint(1);
        assert!(p.is_empty());
    }
}
