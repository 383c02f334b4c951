//! Masking secret fields in form bodies, on the raw bytes: an
//! `application/x-www-form-urlencoded` body (and a query string), and the parts
//! of a `multipart/form-data` body. Every byte outside a masked value is kept as
//! it came, so bytes that are not UTF-8, or a last pair cut by the capture
//! limit, never stop the masking.

use memchr::memmem;

/// What a masked form value becomes: `[REDACTED]`, percent-encoded.
const REDACTED_FORM: &[u8] = b"%5BREDACTED%5D";

/// What a masked multipart part's content becomes.
const REDACTED_PART: &[u8] = b"[REDACTED]";

/// Masks the value of every `name=value` pair whose (percent-decoded) name
/// `is_secret`. In the other pairs, the decoded name and value each go through
/// `net` (the key-value and URL net): a value that hides a secret of its own
/// (`next=https://a/cb?token=...`, `user=u1;password=...`, a name that decodes
/// to `password=...`) is stored masked, percent-encoded again. `None` when
/// nothing was masked.
pub(super) fn mask_urlencoded(
    input: &[u8],
    is_secret: impl Fn(&str) -> bool,
    nets: &Nets<impl NetFn, impl NetFn>,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut copied = 0;
    let mut start = 0;
    let mut masked = false;
    while start <= input.len() {
        let end = memchr::memchr(b'&', &input[start..]).map_or(input.len(), |i| start + i);
        let pair = &input[start..end];
        let eq = memchr::memchr(b'=', pair);
        let raw_name = &pair[..eq.unwrap_or(pair.len())];
        if eq.is_some() && is_secret(&decode_name(raw_name)) {
            // The name may hold a secret of its own (`Authorization: Bearer x=`).
            let name = net_decoded(raw_name, nets);
            out.extend_from_slice(&input[copied..start]);
            out.extend_from_slice(name.as_deref().unwrap_or(raw_name));
            out.push(b'=');
            out.extend_from_slice(REDACTED_FORM);
            copied = end;
            masked = true;
        } else if !pair.is_empty() {
            let name = net_decoded(raw_name, nets);
            let value = eq.and_then(|eq| net_decoded(&pair[eq + 1..], nets));
            if name.is_some() || value.is_some() {
                out.extend_from_slice(&input[copied..start]);
                out.extend_from_slice(name.as_deref().unwrap_or(raw_name));
                if let Some(eq) = eq {
                    out.push(b'=');
                    out.extend_from_slice(value.as_deref().unwrap_or(&pair[eq + 1..]));
                }
                copied = end;
                masked = true;
            }
        }
        start = end + 1;
    }
    if !masked {
        return None;
    }
    out.extend_from_slice(&input[copied..]);
    Some(out)
}

/// A form component passed through `nets.raw` as it came (decoding can hide
/// a name: `%aAuthorization` decodes to a byte and `uthorization`), then
/// decoded (`+` as a space, `%XX`) and passed through `nets.decoded`, and
/// encoded again when that masked something.
fn net_decoded(raw: &[u8], nets: &Nets<impl NetFn, impl NetFn>) -> Option<Vec<u8>> {
    let masked_raw = (nets.raw)(raw);
    let current = masked_raw.as_deref().unwrap_or(raw);
    if memchr::memchr2(b'%', b'+', current).is_some() {
        let spaced: Vec<u8> = current
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        if let Some(masked) = (nets.decoded)(&decoded) {
            return Some(
                form_urlencoded::byte_serialize(&masked)
                    .collect::<String>()
                    .into_bytes(),
            );
        }
    }
    masked_raw
}

/// A text net: the masked text, or `None` when nothing was masked.
pub(super) trait NetFn: Fn(&[u8]) -> Option<Vec<u8>> {}
impl<F: Fn(&[u8]) -> Option<Vec<u8>>> NetFn for F {}

/// The nets [`mask_urlencoded`] runs over names and values that are not
/// secret by name: `decoded` over the decoded text (it may decode further and
/// give decoded text back), `raw` over the text as it came (its output stays
/// as it came, replacement aside).
pub(super) struct Nets<D, R> {
    pub(super) decoded: D,
    pub(super) raw: R,
}

/// A form name, `+` as a space and `%XX` decoded; bytes that are not UTF-8
/// become U+FFFD, which no secret name holds.
fn decode_name(raw: &[u8]) -> String {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The `boundary` parameter of a `multipart/*` content type.
pub(super) fn boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// The boundaries a multipart body may use: its first line, when it starts
/// with `--`, and the `--` line just before its first `Content-Disposition`
/// line (a part behind a prefix, or in a body labelled as something else).
/// Each at most once.
pub(super) fn boundaries_in_body(body: &[u8]) -> Vec<&str> {
    let first = memmem::find(body, b"--")
        // Only blank lines may come before the first delimiter.
        .filter(|&start| body[..start].iter().all(u8::is_ascii_whitespace));
    let mut found: Vec<&str> = Vec::new();
    for line_at in [first, delimiter_before_disposition(body)]
        .into_iter()
        .flatten()
    {
        let line = &body[line_at + 2..];
        let end = line
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(line.len());
        let boundary = std::str::from_utf8(&line[..end])
            .ok()
            .filter(|b| !b.is_empty() && b.len() <= 200);
        if let Some(boundary) = boundary {
            if !found.contains(&boundary) {
                found.push(boundary);
            }
        }
    }
    found
}

/// Where the line before the first `Content-Disposition:` line starts, if it
/// is a `--` delimiter line.
fn delimiter_before_disposition(body: &[u8]) -> Option<usize> {
    const NAME: &[u8] = b"content-disposition:";
    let at = memchr::memchr2_iter(b'c', b'C', body).find(|&i| {
        body.get(i..i + NAME.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(NAME))
    })?;
    // Back over the line break that ends the delimiter line.
    let mut end = at;
    while end > 0 && matches!(body[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    if end == at {
        return None;
    }
    let start = memchr::memrchr(b'\n', &body[..end]).map_or(0, |i| i + 1);
    body[start..end].starts_with(b"--").then_some(start)
}

/// Masks the content of every part whose `Content-Disposition` name
/// `is_secret` (a part cut by the capture limit is masked to the end). `None`
/// when nothing was masked.
pub(super) fn mask_multipart(
    input: &[u8],
    boundary: &str,
    is_secret: impl Fn(&str) -> bool,
) -> Option<Vec<u8>> {
    let delimiter = format!("--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    let mut out = Vec::new();
    let mut copied = 0;
    let mut at = finder.find(input)?;
    loop {
        let part_start = at + delimiter.len();
        let next = finder.find(&input[part_start..]).map(|i| part_start + i);
        let part_end = next.unwrap_or(input.len());
        let part = &input[part_start..part_end];
        // The part's headers end at the first blank line.
        // The earlier blank line ends the headers, CRLF or bare LF.
        let content_at = match (memmem::find(part, b"\r\n\r\n"), memmem::find(part, b"\n\n")) {
            (Some(crlf), Some(lf)) if lf + 2 <= crlf + 4 => Some(lf + 2),
            (Some(crlf), _) => Some(crlf + 4),
            (None, lf) => lf.map(|i| i + 2),
        };
        if let Some(content_at) = content_at {
            let secret = part_names(&part[..content_at])
                .iter()
                .any(|name| is_secret(name));
            if secret {
                // The content ends before the CRLF that precedes the next delimiter.
                let mut content_end = part.len();
                if next.is_some() {
                    if part.ends_with(b"\r\n") {
                        content_end -= 2;
                    } else if part.ends_with(b"\n") {
                        content_end -= 1;
                    }
                }
                let content_end = content_end.max(content_at);
                out.extend_from_slice(&input[copied..part_start + content_at]);
                out.extend_from_slice(REDACTED_PART);
                copied = part_start + content_end;
            }
        }
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&input[copied..]);
    Some(out)
}

/// Every `name` of a part's `Content-Disposition` lines (`name="..."`, and
/// RFC 5987's `name*=UTF-8''...`, percent-decoded). All of them: a part with
/// two such lines is checked under both.
fn part_names(headers: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(headers);
    text.lines()
        .filter(|l| {
            l.as_bytes()
                .get(..20)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"content-disposition:"))
        })
        .flat_map(|line| {
            line.split(';')
                .skip(1)
                .filter_map(|param| {
                    let (name, value) = param.split_once('=')?;
                    let value = value.trim().trim_matches('"');
                    match name.trim().to_ascii_lowercase().as_str() {
                        "name" => Some(value.to_owned()),
                        "name*" => {
                            let encoded = value.rsplit('\'').next().unwrap_or(value);
                            Some(
                                percent_encoding::percent_decode_str(encoded)
                                    .decode_utf8_lossy()
                                    .into_owned(),
                            )
                        }
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_net(_: &[u8]) -> Option<Vec<u8>> {
        None
    }

    type NoNet = fn(&[u8]) -> Option<Vec<u8>>;

    const NO_NETS: Nets<NoNet, NoNet> = Nets {
        decoded: no_net,
        raw: no_net,
    };

    fn secret(name: &str) -> bool {
        name.contains("password")
    }

    fn masked(input: &[u8]) -> Vec<u8> {
        mask_urlencoded(input, secret, &NO_NETS).unwrap_or_else(|| input.to_vec())
    }

    #[test]
    fn urlencoded_values_are_masked_on_the_raw_bytes() {
        assert_eq!(
            masked(b"user=a&password=hunter2"),
            b"user=a&password=%5BREDACTED%5D"
        );
        // Bytes that are not UTF-8 elsewhere do not stop it.
        assert_eq!(
            masked(b"user=\xff&password=hunter2&x=\xfc"),
            b"user=\xff&password=%5BREDACTED%5D&x=\xfc"
        );
        // A last pair cut short is masked to the end.
        assert_eq!(masked(b"a=1&password=hun"), b"a=1&password=%5BREDACTED%5D");
        // Names are decoded before comparing.
        assert_eq!(masked(b"pass%77ord=x"), b"pass%77ord=%5BREDACTED%5D");
        assert_eq!(
            masked(b"user[password]=x&password[]=y"),
            b"user[password]=%5BREDACTED%5D&password[]=%5BREDACTED%5D"
        );
        // Nothing to mask: `None`, not a copy.
        assert!(mask_urlencoded(b"a=1&b&=2&&", secret, &NO_NETS).is_none());
        assert!(mask_urlencoded(b"", secret, &NO_NETS).is_none());
    }

    #[test]
    fn multipart_parts_are_masked_by_name() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nu1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2\r\n--XyZ--\r\n";
        let out = mask_multipart(body, "XyZ", secret).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("name=\"password\"\r\n\r\n[REDACTED]\r\n--XyZ--"),
            "{text}"
        );
        assert!(text.contains("\r\n\r\nu1\r\n"), "{text}");
        // Cut inside the secret part: masked to the end.
        let cut = &body[..body.len() - 14];
        let out = mask_multipart(cut, "XyZ", secret).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("hunt"));
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\""),
            Some("XyZ")
        );
        assert_eq!(boundary("multipart/form-data"), None);
        // A hostile part header: multi-byte characters where the name is sliced.
        for hostile in [
            "Content-Dispositionéé: x",
            "Content-Dispositio\u{FFFD}: x",
            "Content-Disposition:",
        ] {
            let body = format!("--XyZ\r\n{hostile}\r\n\r\nv\r\n--XyZ--");
            assert!(mask_multipart(body.as_bytes(), "XyZ", secret).is_none());
        }
    }
}
