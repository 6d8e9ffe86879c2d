//! Tokens that expire and rotate, through the service layer over a real
//! SQLite store: refused at the instant they stop being valid, whatever the
//! authentication cache holds.

use std::time::Duration;

use latchkey_core::ErrorKind;
use latchkey_service::{testing::TestService, Role, TOKEN_CACHE_TTL};

/// Short enough that the cache entry made before it ends is still fresh.
const SHORT: Duration = Duration::from_millis(400);

#[tokio::test]
async fn an_expired_token_is_refused_at_once_naming_when() {
    assert!(
        SHORT + Duration::from_millis(50) < TOKEN_CACHE_TTL,
        "the check below relies on the cache entry being fresh"
    );
    let t = TestService::start().await;
    let s = t.service();
    let (token, secret) = s
        .create_token(t.admin(), "short", Role::Reader, None, Some(SHORT))
        .await
        .unwrap();
    let expires_at = token.expires_at.expect("an expiry");
    let caller = s
        .authenticate(&token.id, &secret, &latchkey_service::Origin::server())
        .await
        .unwrap();
    assert_eq!(caller.valid_until(), Some(expires_at));
    // The caller is now cached for TOKEN_CACHE_TTL; expiry comes first.
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let err = s
        .authenticate(&token.id, &secret, &latchkey_service::Origin::server())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    let at = latchkey_core::time::Timestamp::from_micros(expires_at).to_string();
    assert_eq!(
        err.message().split(';').next().unwrap(),
        format!("token {} expired at {at}", token.id)
    );
    // Without the secret, nothing is learnt of the token.
    let err = s
        .authenticate(&token.id, "as-wrong", &latchkey_service::Origin::server())
        .await
        .unwrap_err();
    assert!(!err.message().contains("expired"), "{err}");
    // A session holding it ends.
    assert!(s.recheck(&caller).await.unwrap().is_none());
    // Listed with its expiry and last use.
    let listed = s.list_tokens(t.admin()).await.unwrap();
    let listed = listed.iter().find(|x| x.id == token.id).unwrap();
    assert_eq!(listed.expires_at, Some(expires_at));
    assert!(listed.last_used_at.is_some());
}

#[tokio::test]
async fn durations_must_be_positive_and_the_admin_never_expires() {
    let t = TestService::start().await;
    let s = t.service();
    let err = s
        .create_token(t.admin(), "x", Role::Reader, None, Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.message().contains("ttl"), "{err}");
    let (token, _) = t.token("y", Role::Reader, None).await;
    let err = s
        .rotate_token(t.admin(), &token.id, Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.message().contains("grace"), "{err}");
    assert_eq!(t.admin().token().expires_at, None);
    assert_eq!(t.admin().valid_until(), None);
    assert!(s
        .list_tokens(t.admin())
        .await
        .unwrap()
        .iter()
        .all(|x| x.name != "x"));
}

#[tokio::test]
async fn a_rotated_secret_is_accepted_for_its_grace_period_only() {
    let t = TestService::start().await;
    let s = t.service();
    let (token, old) = t.token("ci", Role::Reader, None).await;
    s.authenticate(&token.id, &old, &latchkey_service::Origin::server())
        .await
        .unwrap();
    let (rotated, new) = s
        .rotate_token(t.admin(), &token.id, Some(SHORT))
        .await
        .unwrap();
    assert_eq!(rotated.id, token.id);
    assert_ne!(*new, *old);
    assert!(rotated.previous_secret_until.is_some());
    let by_old = s
        .authenticate(&token.id, &old, &latchkey_service::Origin::server())
        .await
        .unwrap();
    assert_eq!(by_old.valid_until(), rotated.previous_secret_until);
    let by_new = s
        .authenticate(&token.id, &new, &latchkey_service::Origin::server())
        .await
        .unwrap();
    assert_eq!(by_new.valid_until(), None);
    // Cached just now; the grace period ends before the entry ages.
    s.authenticate(&token.id, &old, &latchkey_service::Origin::server())
        .await
        .unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let err = s
        .authenticate(&token.id, &old, &latchkey_service::Origin::server())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(s.recheck(&by_old).await.unwrap().is_none());
    assert!(s.recheck(&by_new).await.unwrap().is_some());
    s.authenticate(&token.id, &new, &latchkey_service::Origin::server())
        .await
        .unwrap();

    // Without grace the old secret is refused at once, cache or not.
    let (_, newer) = s.rotate_token(t.admin(), &token.id, None).await.unwrap();
    let err = s
        .authenticate(&token.id, &new, &latchkey_service::Origin::server())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(s.recheck(&by_new).await.unwrap().is_none());
    s.authenticate(&token.id, &newer, &latchkey_service::Origin::server())
        .await
        .unwrap();
}

#[tokio::test]
async fn only_unlimited_admins_rotate() {
    let t = TestService::start().await;
    let s = t.service();
    let (token, _) = t.token("ci", Role::Reader, None).await;
    let dev = t.caller("dev", Role::Developer, None).await;
    let err = s.rotate_token(&dev, &token.id, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let err = s
        .rotate_token(t.admin(), "ak-unknown", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
