//! Quotas over real loopback HTTP: a burst gets exactly the documented number
//! of 429s with the right Retry-After in each window model and with two
//! limits; keys per app, tenant and API; foreign load; CPU-quota refusals;
//! injected faults and dropped connections.

mod sim_support;

use std::time::Duration;

use mdebulk::pace::{Limit, WindowModel};
use mdebulk::sim::SimConfig;
use serde_json::json;
use sim_support::*;

fn limits(specs: &[&str]) -> Vec<Limit> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

/// Sends `n` sequential `GET machines/{id}` calls; returns the replies.
async fn burst(env: &Env, n: usize) -> Vec<Reply> {
    let id = env.ids()[0].clone();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(env.get(&format!("/api/machines/{id}")).await);
    }
    out
}

/// Splits a burst into admitted calls and the Retry-After values of the 429s,
/// checking every 429's body names `limit`.
#[track_caller]
fn tally(replies: &[Reply], message: &str) -> (usize, Vec<u64>) {
    let mut ok = 0;
    let mut waits = Vec::new();
    for r in replies {
        match r.status {
            200 => ok += 1,
            429 => {
                assert_error(r, 429, "TooManyRequests");
                assert_eq!(r.json["error"]["message"], message);
                waits.push(r.retry_after.expect("429 carries Retry-After"));
            }
            s => panic!("unexpected {s}: {}", r.text),
        }
    }
    (ok, waits)
}

#[tokio::test(flavor = "multi_thread")]
async fn sliding_window_burst() {
    let env = Env::start(SimConfig { limits: limits(&["5/60s"]), ..config() }).await;
    let (ok, waits) =
        tally(&burst(&env, 8).await, "API calls quota exceeded! maximum allowed 5 per 00:01:00");
    assert_eq!(ok, 5);
    assert_eq!(waits.len(), 3);
    // Until the first call leaves the window: just under 60 s, rounded up.
    assert!(waits.iter().all(|w| (55..=60).contains(w)), "{waits:?}");
    let s = env.stats().await;
    assert_eq!(s.throttled, 3);
    let api = &s.by_api["GET machines/{id}"];
    assert_eq!((api.calls, api.admitted, api.throttled), (8, 5, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn sliding_window_frees_up_after_the_window() {
    let env = Env::start(SimConfig { limits: limits(&["5/1s"]), ..config() }).await;
    let (ok, waits) =
        tally(&burst(&env, 7).await, "API calls quota exceeded! maximum allowed 5 per 00:00:01");
    assert_eq!((ok, waits), (5, vec![1, 1]), "a sub-second wait rounds up to 1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, _) = tally(&burst(&env, 5).await, "");
    assert_eq!(ok, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn fixed_window_burst() {
    let env = Env::start(SimConfig {
        limits: limits(&["5/60s"]),
        window: WindowModel::Fixed,
        ..config()
    })
    .await;
    let (ok, waits) =
        tally(&burst(&env, 9).await, "API calls quota exceeded! maximum allowed 5 per 00:01:00");
    assert_eq!((ok, waits.len()), (5, 4));
    // Until the slot that started with the simulator ends.
    assert!(waits.iter().all(|w| (55..=60).contains(w)), "{waits:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_bucket_burst() {
    let env = Env::start(SimConfig {
        limits: limits(&["5/60s"]),
        window: WindowModel::Bucket,
        ..config()
    })
    .await;
    let (ok, waits) =
        tally(&burst(&env, 8).await, "API calls quota exceeded! maximum allowed 5 per 00:01:00");
    assert_eq!((ok, waits.len()), (5, 3));
    // One token every 12 s.
    assert!(waits.iter().all(|w| (10..=12).contains(w)), "{waits:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_limits_name_the_one_that_blocks_longest() {
    // The short limit blocks.
    let env = Env::start(SimConfig { limits: limits(&["3/60s", "5/3600s"]), ..config() }).await;
    let (ok, waits) =
        tally(&burst(&env, 4).await, "API calls quota exceeded! maximum allowed 3 per 00:01:00");
    assert_eq!(ok, 3);
    assert!((55..=60).contains(&waits[0]), "{waits:?}");
    // The long limit blocks.
    let env = Env::start(SimConfig { limits: limits(&["10/60s", "3/3600s"]), ..config() }).await;
    let (ok, waits) =
        tally(&burst(&env, 5).await, "API calls quota exceeded! maximum allowed 3 per 01:00:00");
    assert_eq!((ok, waits.len()), (3, 2));
    assert!(waits.iter().all(|w| (3595..=3600).contains(w)), "{waits:?}");
    // Both block: the larger Retry-After wins.
    let env = Env::start(SimConfig { limits: limits(&["3/60s", "3/3600s"]), ..config() }).await;
    let (ok, waits) =
        tally(&burst(&env, 4).await, "API calls quota exceeded! maximum allowed 3 per 01:00:00");
    assert_eq!(ok, 3);
    assert!((3595..=3600).contains(&waits[0]), "{waits:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_is_per_app_tenant_and_api() {
    let env = Env::start(SimConfig { limits: limits(&["2/60s"]), ..config() }).await;
    let id = env.ids()[0].clone();
    let get = |token: String| {
        let req = env.http.get(format!("{}/api/machines/{id}", env.base)).bearer_auth(token);
        async move { send(req).await.status }
    };
    let same_app = token(&env.http, &env.base, "t1", "app").await;
    let other_app = token(&env.http, &env.base, "t1", "other").await;
    let other_tenant = token(&env.http, &env.base, "t2", "app").await;
    assert_eq!(get(env.token.clone()).await, 200);
    assert_eq!(get(same_app.clone()).await, 200, "two tokens of one app share the quota");
    assert_eq!(get(same_app).await, 429);
    assert_eq!(get(other_app).await, 200);
    assert_eq!(get(other_tenant).await, 200);
    // Another API of the same app has its own counters; all ids share one.
    assert_eq!(env.get("/api/machines?$top=1").await.status, 200);
    assert_eq!(env.get(&format!("/api/machines/{}", env.ids()[1])).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_load_throttles_before_the_quota() {
    let alone = Env::start(SimConfig { limits: limits(&["10/60s"]), ..config() }).await;
    let (ok, _) = tally(
        &burst(&alone, 12).await,
        "API calls quota exceeded! maximum allowed 10 per 00:01:00",
    );
    assert_eq!(ok, 10);
    let shared =
        Env::start(SimConfig { limits: limits(&["10/60s"]), foreign_load: 0.5, ..config() }).await;
    let (ok, waits) = tally(
        &burst(&shared, 12).await,
        "API calls quota exceeded! maximum allowed 10 per 00:01:00",
    );
    assert_eq!(ok, 5, "another app holds half of the window");
    // The other app's oldest call in the window leaves it about 12 s after the start.
    assert!(waits.iter().all(|w| (10..=12).contains(w)), "{waits:?}");
    assert_eq!(shared.stats().await.by_api["GET machines/{id}"].admitted, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_quota_refuses_whatever_the_counts() {
    let env = Env::start(SimConfig { cpu_throttle_rate: 1.0, ..config() }).await;
    for r in burst(&env, 20).await {
        assert_error(&r, 429, "TooManyRequests");
        assert!((1..=60).contains(&r.retry_after.unwrap()));
    }
    let s = env.stats().await;
    assert_eq!((s.throttled, s.cpu_throttled), (20, 20));
    assert_eq!(s.by_api["GET machines/{id}"].admitted, 0, "refused calls consume no quota");

    let some = Env::start(SimConfig { cpu_throttle_rate: 0.3, seed: 9, ..config() }).await;
    let refused = burst(&some, 200).await.iter().filter(|r| r.status == 429).count();
    assert!(refused > 20 && refused < 110, "{refused}");
    assert_eq!(some.stats().await.cpu_throttled as usize, refused);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_faults_match_the_counters() {
    let env = Env::start(SimConfig { error_rate: 1.0, seed: 3, ..config() }).await;
    let id = env.ids()[0].clone();
    let (mut e500, mut e503, mut e503_retry, mut dropped) = (0, 0, 0, 0);
    for _ in 0..200 {
        match try_send(
            env.http.get(format!("{}/api/machines/{id}", env.base)).bearer_auth(&env.token),
        )
        .await
        {
            Ok(r) if r.status == 500 => {
                assert_error(&r, 500, "InternalServerError");
                e500 += 1;
            }
            Ok(r) if r.status == 503 => {
                e503 += 1;
                if let Some(w) = r.retry_after {
                    assert!((1..=3).contains(&w));
                    e503_retry += 1;
                }
            }
            Ok(r) => panic!("every call gets a fault: {} {}", r.status, r.text),
            Err(_) => dropped += 1,
        }
    }
    let s = env.stats().await;
    assert_eq!(s.errors_injected, 200);
    assert_eq!((s.injected_500, s.injected_503), (e500, e503));
    assert_eq!(s.dropped_before + s.dropped_after, dropped);
    assert!(e500 > 20 && e503 > 20 && s.dropped_before > 20 && s.dropped_after > 20, "{s:?}");
    assert!(e503_retry > 5 && e503_retry < e503, "half of the 503s carry Retry-After");
    // Token and /_sim requests never get faults.
    token(&env.http, &env.base, "t1", "app").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drop_after_processing_leaves_the_action_in_place() {
    let env = Env::start(SimConfig { error_rate: 1.0, seed: 4, ..config() }).await;
    let windows: Vec<String> = env
        .sim
        .fleet()
        .into_iter()
        .filter(|m| m.os_platform.as_deref().unwrap().starts_with("Windows"))
        .map(|m| m.id)
        .collect();
    let mut transport_errors = 0;
    for id in windows.iter().take(60) {
        let req = env
            .http
            .post(format!("{}/api/machines/{id}/isolate", env.base))
            .bearer_auth(&env.token);
        if try_send(req.json(&json!({"Comment": "x"}))).await.is_err() {
            transport_errors += 1;
        }
    }
    let s = env.stats().await;
    assert!(s.dropped_after > 0);
    assert_eq!(s.dropped_before + s.dropped_after, transport_errors);
    // Every action created was created by a call whose answer was lost.
    assert_eq!(s.actions_created, s.dropped_after);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resending_in_doubt_posts_meets_the_pending_action() {
    let env = Env::start(SimConfig { error_rate: 0.5, seed: 21, ..config() }).await;
    let windows: Vec<String> = env
        .sim
        .fleet()
        .into_iter()
        .filter(|m| m.os_platform.as_deref().unwrap().starts_with("Windows"))
        .map(|m| m.id)
        .take(40)
        .collect();
    let (mut created, mut already) = (0, 0);
    for id in &windows {
        loop {
            let req = env
                .http
                .post(format!("{}/api/machines/{id}/isolate", env.base))
                .bearer_auth(&env.token);
            match try_send(req.json(&json!({"Comment": "x"}))).await {
                Err(_) => continue,
                Ok(r) if r.status >= 500 => continue,
                Ok(r) if r.status == 201 => created += 1,
                Ok(r) => {
                    assert_error(&r, 400, "ActiveRequestAlreadyExists");
                    already += 1;
                }
            }
            break;
        }
    }
    let s = env.stats().await;
    assert_eq!(created + already, 40);
    assert_eq!(s.actions_created, 40, "one action per machine, however often it was sent");
    assert!(already > 0, "some answers were lost after the action was created");
    assert!(s.duplicate_submissions >= already);
}

#[tokio::test(flavor = "multi_thread")]
async fn moderate_error_rate() {
    let env = Env::start(SimConfig { error_rate: 0.2, seed: 11, ..config() }).await;
    let id = env.ids()[0].clone();
    let mut good = 0;
    for _ in 0..300 {
        let r = try_send(
            env.http.get(format!("{}/api/machines/{id}", env.base)).bearer_auth(&env.token),
        )
        .await;
        if matches!(r, Ok(ref r) if r.status == 200) {
            good += 1;
        }
    }
    let s = env.stats().await;
    assert_eq!(good + s.errors_injected, 300);
    assert!(s.errors_injected > 25 && s.errors_injected < 100, "{}", s.errors_injected);
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_is_added_without_changing_answers() {
    let env = Env::start(SimConfig { latency: Duration::from_millis(40), ..config() }).await;
    let r = env.get("/api/machines?$top=2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["value"].as_array().unwrap().len(), 2);
}
