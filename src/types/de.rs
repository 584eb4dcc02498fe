//! The hand-written `Deserialize` of the open structs and of message content. The open
//! structs keep unknown fields in `extra`; serde's `#[serde(flatten)]` does that by buffering
//! each unknown field, key and value, into its private `Content` tree and then reading them
//! again into the map, and `#[serde(untagged)]` buffers the whole message content before
//! trying each variant: on every request, response and stream chunk. `open_struct!` writes
//! the visitor by hand instead: unknown fields go straight into `Value`s, keys are borrowed
//! from the input where they can be. Missing, duplicate and mistyped fields give serde's own
//! errors; a bad content part is reported at its own path (`messages[0].content[1].type`),
//! not as "did not match any variant".

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    ChatChunk, ChatCompletion, ChatCompletionRequest, ChatMessage, ChunkChoice, CompletionChoice,
    ContentPart, Delta, MessageContent, Role, Stop, StreamOptions, Usage,
};

/// `object` when a chunk leaves it out.
fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

/// `object` when a completion leaves it out.
fn completion_object() -> String {
    "chat.completion".into()
}

/// A map key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The JSON name of a field: its Rust name unless given.
macro_rules! wire_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $wire:literal) => {
        $wire
    };
}

/// The value of a field the object did not have: `required` (serde's "missing field"
/// error), `default`, or an expression.
macro_rules! when_missing {
    (required, $name:expr) => {
        return Err(serde::de::Error::missing_field($name))
    };
    (default, $name:expr) => {
        Default::default()
    };
    (($value:expr), $name:expr) => {
        $value
    };
}

/// `Deserialize` for a struct of named fields plus `extra: Map<String, Value>` that takes
/// every other field: `open_struct!(Type, "what it is", { field [as "json name"]: FieldType
/// => required | default | (expression), ... } [, skip(field, ...)])`; skipped fields are
/// not read from the wire and start at their default.
macro_rules! open_struct {
    ($ty:ident, $expecting:literal, {
        $($field:ident $(as $wire:literal)? : $fty:ty => $missing:tt),* $(,)?
    } $(, skip($($skip:ident),*))?) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct OpenVisitor;
                impl<'de> serde::de::Visitor<'de> for OpenVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $(let mut $field: Option<$fty> = None;)*
                        let mut extra = Map::new();
                        while let Some(key) = map.next_key::<Key<'de>>()? {
                            match key.as_str() {
                                $(wire_name!($field $(, $wire)?) => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field(
                                            wire_name!($field $(, $wire)?),
                                        ));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: Value = map.next_value()?;
                                    extra.insert(key.into_string(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: match $field {
                                Some(v) => v,
                                None => when_missing!($missing, wire_name!($field $(, $wire)?)),
                            },)*
                            $($($skip: Default::default(),)*)?
                            extra,
                        })
                    }
                }
                deserializer.deserialize_map(OpenVisitor)
            }
        }
    };
}

open_struct!(ChatCompletionRequest, "a chat completion request object", {
    model: String => required,
    messages: Vec<ChatMessage> => required,
    stream: Option<bool> => default,
    stream_options: Option<StreamOptions> => default,
    temperature: Option<f64> => default,
    top_p: Option<f64> => default,
    max_tokens: Option<u32> => default,
    max_completion_tokens: Option<u32> => default,
    n: Option<u32> => default,
    stop: Option<Stop> => default,
    seed: Option<i64> => default,
}, skip(native));

open_struct!(StreamOptions, "a stream options object", {
    include_usage: Option<bool> => default,
});

open_struct!(ChatMessage, "a message object", {
    role: Role => required,
    content: Option<MessageContent> => default,
});

open_struct!(ContentPart, "a content part object", {
    kind as "type": String => required,
    text: Option<String> => default,
});

open_struct!(ChatChunk, "a chat completion chunk object", {
    id: String => default,
    object: String => (chunk_object()),
    created: i64 => default,
    model: String => default,
    choices: Vec<ChunkChoice> => default,
    usage: Option<Usage> => default,
});

open_struct!(ChunkChoice, "a chunk choice object", {
    index: u32 => default,
    delta: Delta => default,
    finish_reason: Option<String> => default,
});

open_struct!(Delta, "a delta object", {
    role: Option<String> => default,
    content: Option<String> => default,
});

open_struct!(ChatCompletion, "a chat completion object", {
    id: String => default,
    object: String => (completion_object()),
    created: i64 => default,
    model: String => default,
    choices: Vec<CompletionChoice> => required,
    usage: Option<Usage> => default,
});

open_struct!(CompletionChoice, "a choice object", {
    index: u32 => default,
    message: Value => required,
    finish_reason: Option<String> => default,
});

/// A string, or an array of content parts (untagged, without buffering the value first).
impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> serde::de::Visitor<'de> for ContentVisitor {
            type Value = MessageContent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E>(self, v: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<MessageContent, A::Error> {
                Vec::<ContentPart>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(MessageContent::Parts)
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}
