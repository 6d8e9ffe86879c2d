//! What latchkey's functions cannot do, refused by name: nothing a function
//! asks for is silently dropped.

use latchkey_core::Error;
use latchkey_proto::api;

/// The error for a feature latchkey does not offer.
pub(crate) fn refused(feature: &str) -> Error {
    Error::invalid(format!(
        "latchkey does not support {feature} in functions; remove it to run this function \
         against latchkey"
    ))
}

/// Checks a function's definition for features latchkey cannot provide.
pub(crate) fn check_definition(def: &api::Function) -> Result<(), Error> {
    use api::function::FunctionType;
    if def.function_type == FunctionType::Generator as i32 {
        return Err(refused("generators (functions that yield)"));
    }
    if def.is_class
        || def.is_method
        || !def.class_serialized.is_empty()
        || !def.method_definitions.is_empty()
    {
        return Err(refused("classes (@app.cls)"));
    }
    if def.resources.as_ref().is_some_and(|r| {
        r.gpu_config
            .as_ref()
            .is_some_and(|g| g.count > 0 || !g.gpu_type.is_empty())
    }) {
        return Err(refused("GPUs (gpu=...)"));
    }
    if !def.volume_mounts.is_empty() {
        return Err(refused("volumes (volumes=...)"));
    }
    if !def.shared_volume_mounts.is_empty() {
        return Err(refused("network file systems (network_file_systems=...)"));
    }
    if !def.cloud_bucket_mounts.is_empty() || !def.s3_mounts.is_empty() {
        return Err(refused("cloud bucket mounts (CloudBucketMount)"));
    }
    if def.webhook_config.is_some() || def.http_config.is_some() || def.is_server {
        return Err(refused(
            "web endpoints (@modal.fastapi_endpoint, @modal.asgi_app, ...)",
        ));
    }
    if def.schedule.is_some() {
        return Err(refused("schedules (schedule=modal.Period/Cron)"));
    }
    if def.retry_policy.as_ref().is_some_and(|r| r.retries > 0) {
        return Err(refused("retries (retries=...)"));
    }
    if let Some(pty) = def
        .pty_info
        .as_ref()
        .filter(|p| p.pty_type != 0 || p.enabled)
    {
        return Err(if pty.pty_type == api::pty_info::PtyType::Shell as i32 {
            refused("interactive shells (modal shell)")
        } else {
            refused("interactive mode (modal run --interactive)")
        });
    }
    if def.definition_type == api::function::DefinitionType::Serialized as i32 {
        return Err(refused("serialized functions (serialized=True)"));
    }
    if def.batch_max_size > 0 {
        return Err(refused("batched functions (@modal.batched)"));
    }
    if def.max_concurrent_inputs > 1 || def.target_concurrent_inputs > 1 {
        return Err(refused("concurrent inputs (@modal.concurrent)"));
    }
    if def.proxy_id.is_some() {
        return Err(refused("proxies (proxy=...)"));
    }
    if def.is_checkpointing_function || def.checkpointing_enabled {
        return Err(refused("memory snapshots (enable_memory_snapshot=True)"));
    }
    if def.experimental_group_size > 1 {
        return Err(refused(
            "clustered functions (@modal.experimental.clustered)",
        ));
    }
    if def.scheduler_placement.is_some() || !def.routing_region.is_empty() {
        return Err(refused("regions (region=...)"));
    }
    Ok(())
}

/// Checks what `FunctionPrecreate` already says of a function.
pub(crate) fn check_precreate(req: &api::FunctionPrecreateRequest) -> Result<(), Error> {
    use api::function::FunctionType;
    if req.function_type == FunctionType::Generator as i32 {
        return Err(refused("generators (functions that yield)"));
    }
    if req.webhook_config.is_some() {
        return Err(refused(
            "web endpoints (@modal.fastapi_endpoint, @modal.asgi_app, ...)",
        ));
    }
    if !req.method_definitions.is_empty() {
        return Err(refused("classes (@app.cls)"));
    }
    Ok(())
}
