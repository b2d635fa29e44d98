//! models-data-source + models-data-extractor (llm-d): each endpoint's OpenAI-compatible model
//! list, polled at `GET http://<endpoint><path>` (`/v1/models` by default), published as the
//! endpoint's `/v1/models` attribute: every model id it serves, a LoRA adapter with its `parent`
//! base model. A failed poll or an unreadable answer keeps the last list.

use serde::Deserialize;

use super::endpoints::ModelData;

/// The attribute key upstream publishes the list under, and its producer type.
pub const MODELS_ATTRIBUTE: &str = "/v1/models";
pub const MODELS_EXTRACTOR: &str = "models-data-extractor";

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelData>,
}

/// The models one /v1/models answer lists, or why it lists none.
pub fn parse_models(body: &[u8]) -> Result<Vec<ModelData>, String> {
    serde_json::from_slice::<ModelList>(body)
        .map(|l| l.data)
        .map_err(|e| format!("not an OpenAI model list: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vllm_answer_lists_base_models_and_adapters_with_their_parent() {
        let body = br#"{"object":"list","data":[
            {"id":"llama","object":"model","created":1,"owned_by":"vllm","root":"llama",
             "parent":null,"max_model_len":4096},
            {"id":"sql-lora","object":"model","parent":"llama"}]}"#;
        let models = parse_models(body).unwrap();
        assert_eq!(
            models,
            vec![
                ModelData {
                    id: "llama".into(),
                    parent: None
                },
                ModelData {
                    id: "sql-lora".into(),
                    parent: Some("llama".into())
                },
            ]
        );
    }

    #[test]
    fn an_answer_without_a_data_list_is_refused() {
        assert!(parse_models(br#"{"object":"list"}"#).is_err());
        assert!(parse_models(b"<html>").is_err());
    }
}
