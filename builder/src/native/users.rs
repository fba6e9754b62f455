//! Resolving `USER` and `--chown` values (`name`, `uid`, `name:group`, `uid:gid`) against the
//! stage's own `/etc/passwd` and `/etc/group`, as Docker does.

use std::path::Path;

fn lookup(root: &Path, file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    let text = std::fs::read_to_string(root.join(file)).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 2)
            .then(|| Some((fields[2].parse().ok()?, fields.get(3).and_then(|g| g.parse().ok()))))
            .flatten()
    })
}

/// `(uid, gid)` for a `USER` or `--chown` value. `chown` picks Docker's `--chown` rule for a
/// lone numeric uid (gid = uid) over `USER`'s (primary group from `/etc/passwd`, else 0).
pub fn resolve(root: Option<&Path>, spec: &str, chown: bool) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let from_passwd = |name: &str| root.and_then(|r| lookup(r, "etc/passwd", name));
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let (uid, gid) = from_passwd(user)
                .ok_or_else(|| format!("unable to find user {user}: no matching entries in passwd file"))?;
            (uid, gid)
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => root
                .and_then(|r| lookup(r, "etc/group", g))
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
        },
        None => match primary {
            Some(gid) => gid,
            None if chown => uid,
            None => 0,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let root = Some(dir.path());
        assert_eq!(resolve(root, "app", false), Ok((1000, 1001)));
        assert_eq!(resolve(root, "app:staff", true), Ok((1000, 50)));
        assert_eq!(resolve(None, "10", true), Ok((10, 10)));
        assert_eq!(resolve(None, "10", false), Ok((10, 0)));
        assert_eq!(resolve(None, "10:20", false), Ok((10, 20)));
        assert!(resolve(root, "nobody", false).is_err());
    }
}
