//! Verification cost per request with everything warm: an RS256 bearer token against the cached
//! JWKS, and an API key whose record is cached (HMAC-SHA256 + constant-time compare).
//! Run: `cargo bench -p integration-tests --bench auth_verify` (moto and the dev issuer start
//! themselves; numbers go in docs/performance.md).

use criterion::{Criterion, criterion_group, criterion_main};
use integration_tests::TestEnv;

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (env, token, api_key) = runtime.block_on(async {
        let env = TestEnv::start().await;
        let token = env.token("acme", "viewer");
        let admin = env.token("acme", "admin");
        let (_, key) = env
            .create_api_key(
                &admin,
                &serde_json::json!({ "name": "bench", "scopes": ["dashboards:read"] }),
            )
            .await;
        (env, token, key)
    });
    let config = env.platform.config.snapshot();
    let pepper = config.api_key_pepper_bytes();
    // Warm both caches (JWKS fetch, key record read).
    runtime.block_on(async {
        env.platform.jwt.verify(&token, &config.oidc).await.unwrap();
        env.platform
            .api_keys
            .authenticate(&api_key, &pepper)
            .await
            .unwrap();
    });

    let mut group = c.benchmark_group("auth");
    group.bench_function("jwt_rs256_cached_jwks", |b| {
        b.iter(|| {
            runtime
                .block_on(env.platform.jwt.verify(&token, &config.oidc))
                .unwrap()
        })
    });
    group.bench_function("api_key_cached_record", |b| {
        b.iter(|| {
            runtime
                .block_on(env.platform.api_keys.authenticate(&api_key, &pepper))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
