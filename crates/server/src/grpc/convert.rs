//! The domain as Modal's messages.

use latchkey_core::time::{micros_to_secs, Micros};
use latchkey_proto::api;
use latchkey_store::{Environment, SecretSummary};

use super::IMAGE_BUILDER_VERSION;
use latchkey_service::Caller;

fn secs(micros: Option<Micros>) -> f64 {
    micros.map_or(0.0, micros_to_secs)
}

pub(super) fn secret_metadata(s: &SecretSummary) -> api::SecretMetadata {
    api::SecretMetadata {
        name: s.name().unwrap_or_default().to_owned(),
        creation_info: Some(api::CreationInfo {
            created_at: micros_to_secs(s.created_at),
            created_by: s.created_by.clone(),
        }),
        keys: s.keys.clone(),
        environment_name: s.environment_name.clone(),
        last_used_at: secs(s.last_used_at),
        template_type: String::new(),
    }
}

pub(super) fn secret_list_item(s: &SecretSummary) -> api::SecretListItem {
    api::SecretListItem {
        label: s.name().unwrap_or_default().to_owned(),
        created_at: micros_to_secs(s.created_at),
        last_used_at: secs(s.last_used_at),
        environment_name: s.environment_name.clone(),
        secret_id: s.id.clone(),
        metadata: Some(secret_metadata(s)),
    }
}

pub(super) fn environment_list_item(e: &Environment) -> api::EnvironmentListItem {
    api::EnvironmentListItem {
        name: e.name.clone(),
        webhook_suffix: e.webhook_suffix.clone(),
        created_at: micros_to_secs(e.created_at),
        default: e.is_default,
        environment_id: e.id.clone(),
        image_builder_version: Some(IMAGE_BUILDER_VERSION.to_owned()),
        ..Default::default()
    }
}

pub(super) fn environment_metadata(e: &Environment) -> api::EnvironmentMetadata {
    api::EnvironmentMetadata {
        name: e.name.clone(),
        settings: Some(api::EnvironmentSettings {
            image_builder_version: IMAGE_BUILDER_VERSION.to_owned(),
            webhook_suffix: e.webhook_suffix.clone(),
            ..Default::default()
        }),
        environment_type: api::EnvironmentType::Unspecified as i32,
    }
}

fn timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

pub(super) fn token_info(caller: &Caller) -> api::TokenInfoGetResponse {
    let token = caller.token();
    api::TokenInfoGetResponse {
        token_id: token.id.clone(),
        workspace_id: caller.workspace_id().to_owned(),
        workspace_name: caller.workspace().name.clone(),
        created_at: Some(timestamp(token.created_at)),
        expires_at: None,
        token_name: token.name.clone(),
        identity: Some(api::token_info_get_response::Identity::ServiceUserIdentity(
            api::ServiceUserIdentity {
                service_user_id: token.id.clone(),
                service_user_name: token.name.clone(),
                created_by: None,
            },
        )),
    }
}
