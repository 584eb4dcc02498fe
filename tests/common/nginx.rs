//! A real nginx (Debian's package, installed by scripts/nginx-env.sh; `QM_NGINX` names
//! another binary) as a round-robin load balancer in front of gateway replicas, started in
//! the foreground with its own prefix folder and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub url: String,
    pub conf: PathBuf,
    error_log: PathBuf,
}

/// The configuration used (README "Running several replicas" shows the same blocks).
pub fn config(port: u16, upstreams: &[String], prefix: &Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|u| {
            format!(
                "        server {} max_fails=1 fail_timeout=2s;\n",
                u.trim_start_matches("http://")
            )
        })
        .collect();
    format!(
        "worker_processes 1;\n\
         error_log {prefix}/error.log warn;\n\
         pid {prefix}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
             access_log off;\n\
             client_body_temp_path {prefix}/body;\n\
             proxy_temp_path {prefix}/proxy;\n\
             fastcgi_temp_path {prefix}/fastcgi;\n\
             uwsgi_temp_path {prefix}/uwsgi;\n\
             scgi_temp_path {prefix}/scgi;\n\
             upstream quartermaster {{\n{servers}        keepalive 32;\n    }}\n\
             server {{\n\
                 listen 127.0.0.1:{port};\n\
                 client_max_body_size 32m;\n\
                 location / {{\n\
                     proxy_pass http://quartermaster;\n\
                     proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";\n\
                     proxy_set_header Host $host;\n\
                     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                     # Server-sent events pass through as they are written.\n\
                     proxy_buffering off;\n\
                     proxy_read_timeout 120s;\n\
                     # A replica that refuses connections is skipped; a request already\n\
                     # sent to one that died is not replayed (POSTs are not idempotent).\n\
                     proxy_next_upstream error timeout;\n\
                 }}\n\
             }}\n\
         }}\n",
        prefix = prefix.display()
    )
}

fn binary() -> String {
    std::env::var("QM_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into())
}

impl Nginx {
    /// nginx on a free port in front of `upstreams` (`http://host:port` each); waits until
    /// it accepts connections. Panics when nginx is not installed (run scripts/setup.sh).
    pub async fn start(dir: &Path, upstreams: &[String]) -> Nginx {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix).unwrap();
        let port = super::binary::free_port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config(port, upstreams, &prefix)).unwrap();
        let error_log = prefix.join("error.log");
        let child = Command::new(binary())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nginx does not start ({e}): run scripts/nginx-env.sh or set QM_NGINX")
            });
        let nginx = Nginx {
            child,
            url: format!("http://127.0.0.1:{port}"),
            conf,
            error_log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(&nginx.error_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
