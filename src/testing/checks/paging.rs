//! Order and pages: `ordering`, `cursor_paging`, `limits`, `invalid_cursor`.

use std::collections::HashMap;

use base64::Engine as _;

use super::{consumer, scoped, Check};
use crate::sink::{ConsumerScope, Order};
use crate::testing::support::{
    at, describe, expect_records, order_name, query, read_all, record, scope_name, sorted, Gen,
};
use crate::{SinkErrorKind, UsageQuery, UsageRecord, UsageSink};

/// Pages sort by `(created_at, id)` in both orders, with ties on `created_at`
/// broken by id, also across page boundaries, whatever order records arrive in.
pub(super) async fn ordering<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(2);
    let owners = [Some("acct_order_a"), Some("acct_order_b"), None];
    let mut records = Vec::new();
    for (k, &ms) in [10, 11, 250, 251, 4_000].iter().enumerate() {
        for i in 0..12 {
            let owner = owners[(k + i) % owners.len()];
            records.push(gen.request(ms, owner, "GET", "/rest/v1/items", 200));
        }
    }
    // Ids minted by another clock: the id alone must not decide the order.
    for (ms, id_ms) in [(11, 9_000_000), (250, -5_000_000), (4_000, 0)] {
        let mut r = gen.request(ms, Some("acct_order_a"), "GET", "/rest/v1/items", 200);
        r.id = gen.id(at(id_ms));
        records.push(r);
    }
    gen.shuffle(&mut records);
    for (i, chunk) in records.chunks(17).enumerate() {
        record(sink, chunk, &format!("shuffled batch {i}")).await?;
    }

    for order in [Order::Asc, Order::Desc] {
        let expected = sorted(&records, order);
        let what = format!("one page of all consumers, {}", order_name(order));
        let page = query(sink, &scoped(ConsumerScope::All, order, 1000), &what).await?;
        expect_records(&what, &expected, &page.records)?;

        let what = format!("all consumers, {}, in pages of 7", order_name(order));
        let got = read_all(sink, &scoped(ConsumerScope::All, order, 7), &what).await?;
        expect_records(&what, &expected, &got)?;

        let a: Vec<_> = records
            .iter()
            .filter(|r| r.consumer.as_deref() == Some("acct_order_a"))
            .cloned()
            .collect();
        let what = format!(
            "consumer \"acct_order_a\", {}, in pages of 5",
            order_name(order)
        );
        let got = read_all(sink, &scoped(consumer("acct_order_a"), order, 5), &what).await?;
        expect_records(&what, &sorted(&a, order), &got)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// Paging with the cursor has no gap and no duplicate while newer records are
/// recorded between pages: oldest first they show up on later pages, newest
/// first they do not show up at all.
pub(super) async fn cursor_paging<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(3);
    let pager = "acct_pager";
    let mut stored = Vec::new();
    for i in 0..60 {
        let owner = match i % 3 {
            0 | 1 => Some(pager),
            _ => Some("acct_other"),
        };
        stored.push(gen.request(i / 3, owner, "GET", "/rest/v1/items", 200));
    }
    record(sink, &stored, "the first records").await?;

    let mut next_ms = 100_000;
    let mut newer = |gen: &mut Gen, stored: &mut Vec<UsageRecord>| {
        next_ms += 1;
        let batch = vec![
            gen.request(next_ms, Some(pager), "POST", "/rest/v1/items", 201),
            gen.request(next_ms, Some(pager), "GET", "/rest/v1/items", 200),
            gen.request(next_ms, None, "GET", "/health", 200),
        ];
        stored.extend(batch.iter().cloned());
        batch
    };

    for (scope, order, limit) in [
        (consumer(pager), Order::Asc, 6),
        (ConsumerScope::All, Order::Asc, 8),
        (consumer(pager), Order::Desc, 6),
        (ConsumerScope::All, Order::Desc, 9),
    ] {
        let snapshot: Vec<UsageRecord> = stored
            .iter()
            .filter(|r| scope.contains(r.consumer.as_deref()))
            .cloned()
            .collect();
        let what = format!(
            "paging through {}, {}, {limit} a page, recording newer records between pages",
            scope_name(&scope),
            order_name(order)
        );
        let mut q = scoped(scope.clone(), order, limit);
        let mut got: Vec<UsageRecord> = Vec::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        let mut page_no = 0;
        loop {
            page_no += 1;
            if page_no > 1_000 {
                return Err(format!(
                    "{what}: still returned a next_cursor after 1000 pages"
                ));
            }
            let page = query(sink, &q, &format!("{what}, page {page_no}")).await?;
            for r in page.records {
                if let Some(earlier) = first_seen.insert(r.id.clone(), page_no) {
                    return Err(format!(
                        "{what}: page {page_no} repeats {} first returned on page {earlier}; \
                         the next page must start after the cursor's position",
                        describe(&r)
                    ));
                }
                got.push(r);
            }
            let Some(cursor) = page.next_cursor else {
                break;
            };
            if page_no <= 6 {
                let batch = newer(&mut gen, &mut stored);
                record(sink, &batch, "newer records between pages").await?;
            }
            q.cursor = Some(cursor);
        }
        let expected = match order {
            // Newer records land after the cursor: every one recorded before the
            // last page was read belongs.
            Order::Asc => stored
                .iter()
                .filter(|r| scope.contains(r.consumer.as_deref()))
                .cloned()
                .collect(),
            // Newer records sort before the first page: none of them belongs.
            Order::Desc => snapshot,
        };
        let hint = match order {
            Order::Asc => "records recorded between pages are newer, so they belong on the later pages",
            Order::Desc => "records recorded after the first page are newer than every cursor, so they do not belong",
        };
        expect_records(&format!("{what} ({hint})"), &sorted(&expected, order), &got)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// `limit` is honoured exactly: 1, a few, and 1000 with exactly 1000 and then
/// 1001 records stored, `next_cursor` `None` only when nothing follows.
pub(super) async fn limits<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(6);
    let big = "acct_limits";
    let mut mine: Vec<UsageRecord> = (0..1000)
        .map(|i| gen.request(i / 2, Some(big), "GET", "/rest/v1/items", 200))
        .collect();
    let others: Vec<UsageRecord> = (0..50)
        .map(|i| {
            gen.request(
                i * 3,
                Some("acct_limits_other"),
                "GET",
                "/rest/v1/items",
                200,
            )
        })
        .collect();
    record(sink, &mine, "1000 records of one consumer").await?;
    record(sink, &others, "50 records of another consumer").await?;

    let asc = sorted(&mine, Order::Asc);
    let what = "limit 1000 with exactly 1000 matching records";
    let page = query(sink, &scoped(consumer(big), Order::Asc, 1000), what).await?;
    expect_records(what, &asc, &page.records)?;
    if page.next_cursor.is_some() {
        return Err(format!(
            "{what}: next_cursor is Some, but no record follows the page (it must be None \
             when nothing follows: ask for query.fetch_limit() records, see UsagePage::from_sorted)"
        ));
    }

    for limit in [1, 3] {
        let what = format!("limit {limit} over 1000 matching records");
        let page = query(sink, &scoped(consumer(big), Order::Asc, limit), &what).await?;
        expect_records(&what, &asc[..limit], &page.records)?;
        let Some(cursor) = page.next_cursor else {
            return Err(format!(
                "{what}: next_cursor is None, but more records follow"
            ));
        };
        let what = format!("the second page of {what}");
        let q = UsageQuery {
            cursor: Some(cursor),
            ..scoped(consumer(big), Order::Asc, limit)
        };
        let page = query(sink, &q, &what).await?;
        expect_records(&what, &asc[limit..2 * limit], &page.records)?;
    }

    let newest = gen.request(10_000, Some(big), "GET", "/rest/v1/items", 200);
    record(sink, std::slice::from_ref(&newest), "the 1001st record").await?;
    mine.push(newest);
    for order in [Order::Asc, Order::Desc] {
        let expected = sorted(&mine, order);
        let what = format!(
            "limit 1000 with 1001 matching records, {}",
            order_name(order)
        );
        let page = query(sink, &scoped(consumer(big), order, 1000), &what).await?;
        expect_records(&what, &expected[..1000], &page.records)?;
        let Some(cursor) = page.next_cursor else {
            return Err(format!(
                "{what}: next_cursor is None, but a 1001st record follows"
            ));
        };
        let what = format!("the second page of {what}");
        let q = UsageQuery {
            cursor: Some(cursor),
            ..scoped(consumer(big), order, 1000)
        };
        let page = query(sink, &q, &what).await?;
        expect_records(&what, &expected[1000..], &page.records)?;
        if page.next_cursor.is_some() {
            return Err(format!("{what}: next_cursor is Some on the last page"));
        }
    }

    let five: Vec<UsageRecord> = (0..5)
        .map(|i| gen.request(20_000 + i, Some("acct_five"), "GET", "/health", 200))
        .collect();
    record(sink, &five, "5 records of a third consumer").await?;
    let what = "limit 1 over 5 records, page by page";
    let mut q = scoped(consumer("acct_five"), Order::Asc, 1);
    for (i, expected) in five.iter().enumerate() {
        let page = query(sink, &q, &format!("{what}, page {}", i + 1)).await?;
        expect_records(
            &format!("{what}, page {}", i + 1),
            std::slice::from_ref(expected),
            &page.records,
        )?;
        match (page.next_cursor, i + 1 < five.len()) {
            (Some(c), true) => q.cursor = Some(c),
            (None, false) => {}
            (Some(_), false) => return Err(format!("{what}: the last page has a next_cursor")),
            (None, true) => {
                return Err(format!("{what}: page {} has no next_cursor", i + 1));
            }
        }
    }
    let what = "limit 10 over 5 records";
    let page = query(sink, &scoped(consumer("acct_five"), Order::Asc, 10), what).await?;
    expect_records(what, &five, &page.records)?;
    if page.next_cursor.is_some() {
        return Err(format!("{what}: next_cursor is Some, but nothing follows"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// A cursor issued for another consumer or order, and a forged one, are
/// `Err(SinkErrorKind::InvalidCursor)`: not a page, not a panic.
pub(super) async fn invalid_cursor<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(9);
    let records: Vec<UsageRecord> = (0..40)
        .map(|i: i64| {
            let owner = [Some("acct_cursor_a"), Some("acct_cursor_b"), None][i as usize % 3];
            gen.request(i, owner, "GET", "/rest/v1/items", 200)
        })
        .collect();
    record(
        sink,
        &records,
        "records of two consumers and anonymous ones",
    )
    .await?;

    let a = scoped(consumer("acct_cursor_a"), Order::Asc, 5);
    let what = "the first page for consumer \"acct_cursor_a\" (5 of 14 records)";
    let Some(issued) = query(sink, &a, what).await?.next_cursor else {
        return Err(format!(
            "{what}: next_cursor is None, but more records follow"
        ));
    };
    let own = UsageQuery {
        cursor: Some(issued.clone()),
        ..a.clone()
    };
    query(
        sink,
        &own,
        "the second page for consumer \"acct_cursor_a\", with its own cursor",
    )
    .await?;

    let mut cases: Vec<(String, UsageQuery)> = Vec::new();
    for scope in [
        consumer("acct_cursor_b"),
        ConsumerScope::Anonymous,
        ConsumerScope::All,
    ] {
        cases.push((
            format!(
                "a query for {} with a cursor issued for consumer \"acct_cursor_a\"",
                scope_name(&scope)
            ),
            UsageQuery {
                consumer: scope,
                cursor: Some(issued.clone()),
                ..a.clone()
            },
        ));
    }
    cases.push((
        "a newest-first query with a cursor issued for oldest first".into(),
        UsageQuery {
            order: Order::Desc,
            cursor: Some(issued.clone()),
            ..a.clone()
        },
    ));
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let forged = [
        "garbage".to_owned(),
        String::new(),
        "not a cursor!".to_owned(),
        "AAAA".to_owned(),
        b64("1.a.notanumber.0123456789ab.01HX0000000000000000000000"),
        b64("9.a.1714557000000.0123456789ab.01HX0000000000000000000000"),
        b64("1.a.1714557000000"),
        issued.chars().rev().collect(),
        "x".repeat(4096),
    ];
    for cursor in forged {
        let shown: String = cursor.chars().take(40).collect();
        cases.push((
            format!("a query with the forged cursor {shown:?}"),
            UsageQuery {
                cursor: Some(cursor),
                ..a.clone()
            },
        ));
    }
    for (what, q) in cases {
        match sink.query(&q).await {
            Ok(page) => {
                return Err(format!(
                    "{what} was answered with a page of {} records; it must fail with \
                     SinkErrorKind::InvalidCursor (decode cursors with UsageQuery::position)",
                    page.records.len()
                ));
            }
            Err(e) if e.kind() == SinkErrorKind::InvalidCursor => {}
            Err(e) => {
                return Err(format!(
                    "{what} failed with kind {:?} ({e}); it must be SinkErrorKind::InvalidCursor",
                    e.kind()
                ));
            }
        }
    }
    Ok(())
}
