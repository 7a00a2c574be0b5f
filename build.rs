//! Links the system libtpms, found with pkg-config (Debian: `libtpms-dev`).

fn main() {
    if let Err(err) = pkg_config::Config::new()
        .atleast_version("0.9")
        .probe("libtpms")
    {
        panic!(
            "libtpms was not found with pkg-config ({err}); install it (Debian: apt-get install libtpms-dev)"
        );
    }
}
