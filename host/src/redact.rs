//! What is printed of a value that may hold a secret: one home, used wherever such a value is
//! logged, returned in an error or shown by the API.

/// `url` with any credentials in it (`https://user:password@host`) replaced by `***`.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_a_url_are_never_printed() {
        assert_eq!(
            super::url("https://elastic:s3cret@es.example.com:9243/x?y"),
            "https://***@es.example.com:9243/x?y"
        );
        assert_eq!(super::url("http://user@host"), "http://***@host");
        assert_eq!(super::url("http://host:9200/a@b"), "http://host:9200/a@b");
        assert_eq!(super::url("kafka:9092"), "kafka:9092");
    }
}
