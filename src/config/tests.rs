//! The settings' load, validation, secrets and reload diff, as a user meets them.

use super::*;

use figment2::Jail;

/// Run `f` in a jail: a fresh working folder and an environment restored afterwards.
fn jailed(f: impl FnOnce(&mut Jail) -> Result<(), figment2::Error>) {
    Jail::expect_with(f);
}

#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    jailed(|jail| {
        jail.create_file(
            "config.yaml",
            "dingtalk:\n  app_key: from-file\n  rate_limit: 5\nhttp:\n  listen: 127.0.0.1:9999\n",
        )?;
        jail.set_env("DINGREC_DINGTALK__APP_KEY", "from-env");
        jail.set_env("DINGREC_CONFIG", "ignored");
        let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
        assert_eq!(s.dingtalk.app_key, "from-env");
        assert_eq!(s.dingtalk.rate_limit, 5);
        assert_eq!(s.http.listen.port(), 9999);
        assert_eq!(
            s.dingtalk.request_timeout,
            Duration::from_secs(10),
            "default kept"
        );
        assert_eq!(s.defaults.window, Duration::from_secs(1800));
        Ok(())
    });
}

#[test]
fn defaults_verify_is_off_or_fields_over_the_built_in_ones() {
    jailed(|jail| {
        jail.create_file("off.yaml", "defaults:\n  verify: false\n")?;
        let s = Settings::load(Some(Path::new("off.yaml"))).expect("loads");
        assert_eq!(s.defaults.verify, None);
        assert_eq!(s.defaults.typed().expect("valid").verify, None);
        jail.create_file("watch.yaml", "defaults:\n  verify: { watch: 1m }\n")?;
        let s = Settings::load(Some(Path::new("watch.yaml"))).expect("loads");
        assert_eq!(
            s.defaults.verify,
            Some(Verify {
                watch: Duration::from_secs(60),
                ..Verify::default()
            })
        );
        jail.create_file("bad.yaml", "defaults:\n  verify: { after: 0s }\n")?;
        let err = Settings::load(Some(Path::new("bad.yaml")))
            .expect_err("after 0s")
            .to_string();
        assert!(err.contains("defaults.verify.after"), "{err}");
        Ok(())
    });
}

#[test]
fn nested_environment_keys_reach_deep_settings() {
    jailed(|jail| {
        jail.set_env("DINGREC_DEFAULTS__RETRY__MAXIMUM_ATTEMPTS", "7");
        jail.set_env("DINGREC_SCHEDULER__SHUTDOWN_TIMEOUT", "3s");
        let s = Settings::load(None).expect("loads");
        assert_eq!(s.defaults.retry.maximum_attempts, 7);
        assert_eq!(s.scheduler.shutdown_timeout, Duration::from_secs(3));
        Ok(())
    });
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    jailed(|jail| {
        jail.create_file("config.yaml", "dingtalk:\n  rate_limt: 5\n")?;
        let err = Settings::load(Some(Path::new("config.yaml"))).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("rate_limt"), "{msg}");
        assert!(msg.contains("dingtalk"), "{msg}");
        assert!(msg.contains("config.yaml"), "{msg}");
        Ok(())
    });
    jailed(|jail| {
        jail.set_env("DINGREC_HTTP__LISTN", "x");
        let err = Settings::load(None).expect_err("unknown env key");
        let msg = err.to_string();
        assert!(
            msg.contains("(from the environment: DINGREC_HTTP__LISTN)"),
            "{msg}"
        );
        Ok(())
    });
}

#[test]
fn bad_values_name_the_key_and_the_variable() {
    jailed(|jail| {
        jail.create_file("config.yaml", "defaults:\n  timezone: Asia/Shangai\n")?;
        let err = Settings::load(Some(Path::new("config.yaml"))).expect_err("bad zone");
        assert!(err.to_string().contains("defaults.timezone"), "{err}");
        jail.create_file("c2.yaml", "dingtalk:\n  request_timeout: soon\n")?;
        let err = Settings::load(Some(Path::new("c2.yaml"))).expect_err("bad duration");
        assert!(err.to_string().contains("dingtalk.request_timeout"), "{err}");
        for lease in ["1s", "1h"] {
            jail.create_file("c3.yaml", &format!("scheduler:\n  lease: {lease}\n"))?;
            let err = Settings::load(Some(Path::new("c3.yaml"))).expect_err("lease out of bounds");
            assert_eq!(
                err.to_string().lines().last(),
                Some(format!("scheduler.lease must be between 5s and 10m (it is {lease})").as_str()),
                "{err}"
            );
        }
        jail.set_env("DINGREC_DINGTALK__RATE_LIMIT", "lots");
        let err = Settings::load(None).expect_err("bad number");
        let msg = err.to_string();
        assert!(msg.contains("dingtalk.rate_limit"), "{msg}");
        assert!(
            msg.contains("(from the environment: DINGREC_DINGTALK__RATE_LIMIT)"),
            "{msg}"
        );
        Ok(())
    });
}

#[test]
fn built_in_policy_defaults_match_the_settings_defaults() {
    assert_eq!(
        DefaultSettings::default().typed().expect("valid"),
        PolicyDefaults::default()
    );
}

#[test]
fn alert_destinations_read_their_secrets_from_files_or_credentials_and_never_print_them() {
    jailed(|jail| {
        let dir = jail.directory().to_owned();
        jail.create_file("robot_token", "TOKEN-CANARY\n")?;
        jail.create_dir("creds")?;
        jail.create_file("creds/ops_secret", "SEC-CANARY\n")?;
        jail.create_file("creds/pager_secret", "whsec_Zm9v\n")?;
        jail.create_file(
            "config.yaml",
            &format!(
                "alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n      access_token_file: {}/robot_token\n    pager:\n      type: webhook\n      url: http://127.0.0.1:9/hook\n  default: [ops]\n",
                dir.display()
            ),
        )?;
        jail.set_env("CREDENTIALS_DIRECTORY", dir.join("creds").display());
        let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
        let ops = &s.alerts.destinations["ops"];
        assert_eq!(ops.endpoint(), ROBOT_URL);
        assert_eq!(
            ops.access_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("TOKEN-CANARY")
        );
        assert_eq!(
            ops.secret
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("SEC-CANARY")
        );
        assert_eq!(
            s.alerts.events.len(),
            AlertEvent::ALL.len() - 1,
            "every event but `test` by default"
        );
        let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap_or_default());
        assert!(!shown.contains("CANARY") && !shown.contains("Zm9v"), "{shown}");
        Ok(())
    });
}

#[test]
fn a_destination_without_its_secret_loads_for_commands_and_is_refused_for_sending() {
    for (yaml, says) in [
        (
            "alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n",
            "alerts.destinations.ops: the robot's access token is missing",
        ),
        (
            "alerts:\n  destinations:\n    pager:\n      type: webhook\n      url: https://example.com/h\n",
            "alerts.destinations.pager: the webhook's signing secret is missing",
        ),
    ] {
        jailed(|jail| {
            jail.create_file("config.yaml", yaml)?;
            let s = Settings::load(Some(Path::new("config.yaml"))).expect(yaml);
            let e = s.alerts.check_secrets().expect_err(yaml).to_string();
            assert!(e.contains(says), "{yaml}: {e}");
            Ok(())
        });
    }
}

#[test]
fn bad_alert_settings_name_the_key() {
    let base = "dingtalk:\n  app_key: k\n";
    for (yaml, says) in [
        (
            "alerts:\n  destinations:\n    pager:\n      type: webhook\n      url: http://example.com/h\n",
            "alerts.destinations.pager.url 'http://example.com/h': plain http:// is allowed only to a loopback address",
        ),
        (
            "alerts:\n  default: [ops]\n",
            "alerts.default[0]: 'ops' is not one of alerts.destinations",
        ),
        ("alerts:\n  events: [failed, exploded]\n", "alerts.events"),
        (
            "alerts:\n  destinations:\n    ops:\n      type: pager_duty\n",
            "alerts.destinations.ops",
        ),
    ] {
        jailed(|jail| {
            jail.create_file("config.yaml", &format!("{base}{yaml}"))?;
            let e = Settings::load(Some(Path::new("config.yaml")))
                .expect_err(yaml)
                .to_string();
            assert!(e.contains(says), "{yaml}: {e}");
            Ok(())
        });
    }
}

#[test]
fn changed_keys_are_named_and_secrets_are_not_shown() {
    let old = Settings::default();
    let mut new = old.clone();
    assert_eq!(old, new);
    assert!(changed_keys(&old, &new).is_empty());
    new.dingtalk.rate_limit = 5;
    new.dingtalk.token_refresh_margin = Duration::from_secs(1);
    new.dingtalk
        .classification
        .insert("recordStartError".into(), RetryClass::Fail);
    new.dingtalk.app_secret = Some(SecretString::from("CANARY-new".to_owned()));
    assert_ne!(old, new);
    let keys = changed_keys(&old, &new);
    assert_eq!(
        keys,
        vec![
            "dingtalk.classification.recordStartError",
            "dingtalk.rate_limit",
            "dingtalk.token_refresh_margin",
            "dingtalk.app_secret"
        ]
    );
    assert!(!format!("{keys:?}").contains("CANARY"));
}

#[test]
fn secrets_from_the_environment_arrive_exactly_as_written() {
    for secret in [
        "123456",
        "0012",
        "true",
        "\"quoted\"",
        "with spaces ",
        "[1, 2]",
        "a: b",
    ] {
        jailed(|jail| {
            jail.set_env("DINGREC_DINGTALK__APP_SECRET", secret);
            jail.set_env("DINGREC_DINGTALK__SUITE_SECRET", secret);
            jail.set_env("DINGREC_DATABASE__PASSWORD", secret);
            let s = Settings::load(None).expect("loads");
            let exposed = |v: &Option<SecretString>| v.as_ref().map(|v| v.expose_secret().to_owned());
            assert_eq!(exposed(&s.dingtalk.app_secret).as_deref(), Some(secret));
            assert_eq!(exposed(&s.dingtalk.suite_secret).as_deref(), Some(secret));
            assert_eq!(exposed(&s.database.password).as_deref(), Some(secret));
            Ok(())
        });
    }
}

#[test]
fn a_secret_written_into_the_config_file_is_refused_at_its_line() {
    for (yaml, key, line) in [
        (
            "dingtalk:\n  app_key: k\n  app_secret: hunter2\n",
            "dingtalk.app_secret",
            "3:3",
        ),
        (
            "# c\ndatabase:\n  path: /tmp/x.db\n  password: hunter2\n",
            "database.password",
            "4:3",
        ),
        ("dingtalk:\n  suite_ticket: t\n", "dingtalk.suite_ticket", "2:3"),
    ] {
        jailed(|jail| {
            jail.create_file("config.yaml", yaml)?;
            let e = Settings::load(Some(Path::new("config.yaml"))).expect_err("refused");
            let text = e.to_string();
            assert!(text.starts_with(&format!("config.yaml:{line}: {key}:")), "{text}");
            assert!(
                text.contains("_file") && text.contains("CREDENTIALS_DIRECTORY"),
                "{text}"
            );
            assert!(text.contains("DINGREC_"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            Ok(())
        });
    }
}

#[test]
fn a_postgres_url_to_another_machine_must_verify_its_certificate() {
    let check = |url: &str| {
        let d = DatabaseSettings {
            url: url.to_owned(),
            ..DatabaseSettings::default()
        };
        d.validate().map_err(|e| e.to_string())
    };
    for ok in [
        "postgres://dingrec@db.example.com/dingrec?sslmode=verify-full",
        "postgres://dingrec@db.example.com/dingrec?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
        "postgres://dingrec@localhost/dingrec",
        "postgres://dingrec@127.0.0.1:5433/dingrec?sslmode=disable",
        "postgres://dingrec@[::1]/dingrec",
        "postgres://dingrec@localhost/dingrec?host=/run/postgresql",
    ] {
        assert_eq!(check(ok), Ok(()), "{ok}");
    }
    for (bad, mode) in [
        ("postgres://dingrec@db.example.com/dingrec", "prefer"),
        (
            "postgres://dingrec@db.example.com/dingrec?sslmode=require",
            "require",
        ),
        ("postgres://dingrec@10.1.2.3/dingrec?sslmode=disable", "disable"),
    ] {
        let e = check(bad).expect_err(bad);
        assert!(
            e.starts_with("database.url:") && e.contains(&format!("sslmode is {mode}")),
            "{e}"
        );
        assert!(e.contains("verify-full"), "{e}");
    }
}

#[test]
fn a_whsec_webhook_secret_must_be_base64() {
    let with = |secret: &str| {
        let mut s = Settings::default();
        s.alerts.destinations.insert(
            "pager".into(),
            Destination {
                kind: DestinationType::Webhook,
                url: "https://alerts.example.com/dingrec".into(),
                access_token_file: PathBuf::new(),
                access_token: None,
                secret_file: PathBuf::new(),
                secret: Some(SecretString::from(secret.to_owned())),
                at_mobiles: vec![],
            },
        );
        s.alerts.check_secrets().map_err(|e| e.to_string())
    };
    assert_eq!(with("whsec_c2VjcmV0"), Ok(()));
    assert_eq!(with("any string at all"), Ok(()));
    let e = with("whsec_not base64!").expect_err("refused");
    assert!(
        e.starts_with("alerts.destinations.pager:") && e.contains("base64"),
        "{e}"
    );
    assert!(!e.contains("not base64!"), "the secret is not shown: {e}");
}

#[test]
fn plain_http_is_only_for_loopback() {
    assert!(check_base_url("https://api.dingtalk.com").is_ok());
    assert!(check_base_url("http://127.0.0.1:8080").is_ok());
    assert!(check_base_url("http://localhost:8080").is_ok());
    assert!(check_base_url("http://[::1]:8080").is_ok());
    assert!(check_base_url("http://api.dingtalk.com").is_err());
    assert!(check_base_url("http://10.0.0.1").is_err());
    assert!(check_base_url("ftp://x").is_err());
}

#[test]
fn a_postgres_url_takes_its_password_from_credentials_and_never_prints_it() {
    jailed(|jail| {
        let dir = jail.directory().to_owned();
        jail.create_dir("creds")?;
        jail.create_file("creds/database_password", "CANARY-db-password\n")?;
        jail.create_file(
            "config.yaml",
            "database:\n  url: postgres://dingrec@db.example.com:5432/dingrec?sslmode=verify-full\n",
        )?;
        jail.set_env("CREDENTIALS_DIRECTORY", dir.join("creds").display());
        let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
        assert_eq!(s.database.engine(), DatabaseEngine::Postgres);
        let options = s.database.postgres_options().expect("options");
        assert_eq!(options.get_host(), "db.example.com");
        assert_eq!(options.get_database(), Some("dingrec"));
        // (Not `options`: sqlx's own Debug shows the password; dingrec never prints it.)
        let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap_or_default());
        assert!(!shown.contains("CANARY"), "{shown}");
        assert_eq!(
            s.database
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .as_deref(),
            Some("CANARY-db-password")
        );
        Ok(())
    });
}

#[test]
fn a_bad_database_url_is_refused_naming_the_key_and_why() {
    let with = |url: &str, path: Option<&str>| {
        let mut s = Settings::default();
        s.database.url = url.to_owned();
        if let Some(p) = path {
            s.database.path = p.into();
        }
        s.validate().err().map(|e| e.to_string())
    };
    assert_eq!(
        with("postgres://dingrec@db/dingrec?sslmode=verify-full", None),
        None
    );
    let password = with("postgres://dingrec:CANARY@db/dingrec", None).expect("refused");
    assert!(
        password.contains("database.url") && password.contains("password_file"),
        "{password}"
    );
    assert!(!password.contains("CANARY"), "{password}");
    let both = with("postgres://dingrec@db/dingrec", Some("/tmp/d.db")).expect("refused");
    assert!(both.contains("database.path"), "{both}");
    let scheme = with("mysql://db/dingrec", None).expect("refused");
    assert!(scheme.contains("postgres://"), "{scheme}");
    let mut s = Settings::default();
    s.database.max_connections = 0;
    assert!(
        s.validate()
            .is_err_and(|e| e.to_string().contains("database.max_connections"))
    );
}

#[test]
fn secrets_come_from_a_file_first_and_never_print() {
    jailed(|jail| {
        jail.create_file("secret", "CANARY-file-secret\n")?;
        jail.create_file(
            "config.yaml",
            "dingtalk:\n  app_key: k\n  app_secret_file: secret\n",
        )?;
        jail.set_env("DINGREC_DINGTALK__APP_SECRET", "CANARY-env-secret");
        let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
        let creds = s.credentials().expect("complete");
        match &creds {
            Credentials::Internal { app_secret, .. } => {
                assert_eq!(app_secret.expose_secret(), "CANARY-file-secret")
            }
            other => panic!("unexpected {other:?}"),
        }
        let printed = format!("{s:?} {creds:?}");
        assert!(!printed.contains("CANARY"), "{printed}");
        Ok(())
    });
}

#[test]
fn the_environment_secret_is_the_last_resort() {
    jailed(|jail| {
        jail.set_env("DINGREC_DINGTALK__APP_KEY", "k");
        jail.set_env("DINGREC_DINGTALK__APP_SECRET", "CANARY-env-secret");
        let s = Settings::load(None).expect("loads");
        assert!(format!("{:?}", s.dingtalk).contains("[REDACTED]"));
        assert!(!format!("{:?}", s.dingtalk).contains("CANARY"));
        assert!(s.credentials().is_ok());
        Ok(())
    });
    jailed(|jail| {
        jail.set_env("DINGREC_DINGTALK__APP_KEY", "k");
        let none = Settings::load(None).expect("loads");
        assert!(
            none.credentials()
                .expect_err("missing")
                .to_string()
                .contains("secret")
        );
        Ok(())
    });
}
