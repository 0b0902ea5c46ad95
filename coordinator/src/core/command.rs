//! Building a task's argv and environment from the project's command spec and the task's
//! parameters. Never a shell string: values with spaces, quotes and `$` arrive intact.

use crate::core::render::{argparse_args, check_hydra_value, hydra_override, RenderError};
use crate::core::value::{Params, Value};

/// How parameters are passed to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgStyle {
    /// `key=value` in Hydra's override grammar (the default, as in Python HSM).
    #[default]
    Hydra,
    /// `--key value` for argparse scripts.
    Argparse,
}

/// The validated command part of the project config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The interpreter, e.g. `python3` or `/opt/conda/bin/python`.
    pub python: String,
    /// The training script, relative to the project root (or absolute). A sweep file's `script:`
    /// overrides it.
    pub script: Option<String>,
    /// A full argv template replacing the default command; see `build_argv` for placeholders.
    pub template: Option<Vec<String>>,
    pub style: ArgStyle,
    /// Run through `conda run -n NAME --no-capture-output`.
    pub conda_env: Option<String>,
    /// Append `wandb.group=<group>` in the default Hydra command. Off unless the project asks
    /// for it (`command.wandb_group: true`, a Python HSM v1 `wandb.project`, `--group`): a
    /// Hydra app whose config has no `wandb` key would reject it.
    pub wandb_group: bool,
    /// Whether the script is a Hydra app (`command.hydra`, else detected from `@hydra.main` in
    /// the script by the CLI before launching). `None`: not known, treated as not Hydra.
    pub hydra: Option<bool>,
    /// Environment variables every task gets (`command.env`, a source's `env` on top).
    pub env: Vec<(String, String)>,
    /// Shell lines run before each task in the task's shell (`module load …`, `source
    /// .venv/bin/activate`); the command then replaces that shell.
    pub pre_script: Vec<String>,
}

/// What one source changes about how its tasks start (its `conda_env`, `env`, `pre_script`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSetup {
    /// Replaces `command.conda_env` for the source's tasks.
    pub conda_env: Option<String>,
    /// Added to `command.env` (a name set in both takes the source's value).
    pub env: Vec<(String, String)>,
    /// Replaces `command.pre_script` when not empty.
    pub pre_script: Vec<String>,
}

impl CommandSpec {
    /// The command a source's tasks run: its own interpreter (when it has one) and its setup
    /// over this project-wide one.
    pub fn for_source(&self, python: Option<&str>, setup: &SourceSetup) -> CommandSpec {
        let mut env = self.env.clone();
        for (name, value) in &setup.env {
            env.retain(|(n, _)| n != name);
            env.push((name.clone(), value.clone()));
        }
        CommandSpec {
            python: python.map_or_else(|| self.python.clone(), str::to_string),
            conda_env: setup.conda_env.clone().or_else(|| self.conda_env.clone()),
            env,
            pre_script: if setup.pre_script.is_empty() {
                self.pre_script.clone()
            } else {
                setup.pre_script.clone()
            },
            ..self.clone()
        }
    }
}

impl Default for CommandSpec {
    fn default() -> Self {
        CommandSpec {
            python: "python3".into(),
            script: None,
            template: None,
            style: ArgStyle::Hydra,
            conda_env: None,
            wandb_group: false,
            hydra: None,
            env: Vec::new(),
            pre_script: Vec::new(),
        }
    }
}

/// Everything about one task attempt that the command and environment may mention.
#[derive(Debug, Clone)]
pub struct LaunchContext<'a> {
    pub sweep_id: &'a str,
    /// 1-based task index.
    pub task_index: u64,
    /// `task_007`.
    pub task_id: &'a str,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The task's results directory (absolute), passed as `output.dir` and `HSM_OUTPUT_DIR`.
    pub output_dir: &'a str,
    /// The W&B group; defaults to the sweep id.
    pub group: &'a str,
    /// The sweep file's `script:`, which overrides `CommandSpec::script`.
    pub script_override: Option<&'a str>,
}

/// Why a task's command cannot be built. Template errors name the element, counting from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// The default command (or a template's `{script}`) needs a script and none is configured.
    #[error(
        "no training script configured: set command.script in .hsm/config.yaml or script: in the \
         sweep file"
    )]
    NoScript,
    /// `command:` is an empty list.
    #[error("the command template is empty: give at least the program to run")]
    EmptyTemplate,
    /// A template without `{overrides}` would run every task with the same arguments.
    #[error(
        "the command template has no {{overrides}} element, so the task parameters would not be \
         passed: add \"{{overrides}}\" as an element"
    )]
    NoOverrides,
    /// `{name}` is not one of the placeholders `build_argv` knows.
    #[error(
        "unknown placeholder {{{name}}} in template element {element} ({text:?}): known are \
         {{python}}, {{script}}, {{overrides}}, {{output_dir}}, {{sweep_id}}, {{task_id}}, \
         {{task_index}}, {{attempt}}, {{group}}; write {{{{ and }}}} for literal braces"
    )]
    UnknownPlaceholder {
        name: String,
        element: usize,
        text: String,
    },
    /// A `{` without its `}`.
    #[error(
        "unclosed brace in template element {element} ({text:?}): write {{{{ for a literal brace"
    )]
    UnclosedBrace { element: usize, text: String },
    /// A `}` that closes nothing.
    #[error(
        "unmatched closing brace in template element {element} ({text:?}): write }}}} for a literal \
         brace"
    )]
    UnmatchedBrace { element: usize, text: String },
    /// `{overrides}` expands into several arguments, so it cannot share an element with text.
    #[error(
        "{{overrides}} must be a template element of its own, found inside element {element} \
         ({text:?})"
    )]
    EmbeddedOverrides { element: usize, text: String },
    /// A parameter value that Hydra's override grammar cannot deliver intact.
    #[error("parameter {key} cannot be passed to Hydra")]
    Render {
        key: String,
        #[source]
        source: RenderError,
    },
}

/// The placeholders a template element may contain; `{overrides}` only as a whole element.
const PLACEHOLDERS: &[&str] = &[
    "python",
    "script",
    "overrides",
    "output_dir",
    "sweep_id",
    "task_id",
    "task_index",
    "attempt",
    "group",
];

/// One template element after parsing.
#[derive(Debug, PartialEq)]
enum Element {
    /// Exactly `{overrides}`: expands into the rendered parameter arguments.
    Overrides,
    /// Text with placeholders substituted in place.
    Text(Vec<Piece>),
}

#[derive(Debug, PartialEq)]
enum Piece {
    Literal(String),
    Placeholder(&'static str),
}

/// The argv of one task attempt. Never a shell string: each value is exactly one element.
///
/// - Default, Hydra style (as in Python HSM):
///   `[python, script, k1=v1, …, output.dir=<output_dir>, wandb.group=<group>]`, values in Hydra's
///   override grammar (`render::hydra_value`, so a path with spaces is quoted for Hydra too);
///   `wandb.group` only when `spec.wandb_group`. For a Hydra app (`spec.hydra == Some(true)`)
///   the keys hsm adds are written `++key=value` (Hydra adds the key when the app's config lacks
///   it, where a plain `key=value` fails with "Key 'output' is not in struct"), and
///   `hydra.run.dir=<output_dir>` follows, so every task has a run directory of its own (Hydra's
///   default `outputs/<date>/<time>/` is shared by tasks started in the same second).
/// - Default, argparse style: `[python, script, --k1, v1, …]` with no output argument: argparse
///   scripts would reject an unknown flag, so they read `HSM_OUTPUT_DIR` (see `task_env`) instead.
/// - Template (`spec.template`): each element in order. An element that is exactly `{overrides}`
///   becomes the parameter arguments in the configured style (without `output.dir`/`wandb.group`:
///   the template places `{output_dir}` and `{group}` itself). Inside other elements `{python}`,
///   `{script}`, `{output_dir}`, `{sweep_id}`, `{task_id}`, `{task_index}`, `{attempt}` and
///   `{group}` are replaced by their plain text (no Hydra quoting: the template author knows what
///   the receiving program expects); `{{` and `}}` are literal braces.
/// - `spec.conda_env` prefixes `conda run -n <env> --no-capture-output` to either form.
/// - `spec.pre_script` runs first, in `/bin/sh`, which then execs the command (`with_pre_script`).
///
/// The script is `ctx.script_override` (the sweep file's `script:`) if set, else `spec.script`.
pub fn build_argv(
    spec: &CommandSpec,
    params: &Params,
    ctx: &LaunchContext,
) -> Result<Vec<String>, CommandError> {
    let script = ctx
        .script_override
        .or(spec.script.as_deref())
        .filter(|script| !script.is_empty());
    let parameter_args = render_params(spec.style, params)?;

    let mut argv = Vec::new();
    if let Some(env) = &spec.conda_env {
        argv.extend(
            ["conda", "run", "-n", env, "--no-capture-output"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    match &spec.template {
        None => {
            argv.push(spec.python.clone());
            argv.push(script.ok_or(CommandError::NoScript)?.to_string());
            argv.extend(parameter_args);
            if spec.style == ArgStyle::Hydra {
                let hydra_app = spec.hydra == Some(true);
                let added = |key: &str, value: &str| {
                    let text = hydra_override(key, &Value::Str(value.to_string()));
                    if hydra_app {
                        format!("++{text}")
                    } else {
                        text
                    }
                };
                argv.push(added("output.dir", ctx.output_dir));
                if hydra_app {
                    argv.push(hydra_override(
                        "hydra.run.dir",
                        &Value::Str(ctx.output_dir.to_string()),
                    ));
                }
                if spec.wandb_group {
                    argv.push(added("wandb.group", ctx.group));
                }
            }
        }
        Some(template) => {
            for element in parse_template(template)? {
                match element {
                    Element::Overrides => argv.extend(parameter_args.iter().cloned()),
                    Element::Text(pieces) => {
                        let mut text = String::new();
                        for piece in pieces {
                            match piece {
                                Piece::Literal(literal) => text.push_str(&literal),
                                Piece::Placeholder(name) => {
                                    text.push_str(&placeholder_value(name, spec, script, ctx)?)
                                }
                            }
                        }
                        argv.push(text);
                    }
                }
            }
        }
    }
    Ok(with_pre_script(&spec.pre_script, argv))
}

/// Checks a configured template without a task at hand: not empty, braces balanced, placeholders
/// known, `{overrides}` present and on its own. Run by config validation so that a bad template
/// fails before anything starts.
pub fn validate_template(template: &[String]) -> Result<(), CommandError> {
    parse_template(template).map(|_| ())
}

/// Whether Python source looks like a Hydra app: a decorator line naming `hydra.main`
/// (`@hydra.main(...)`), or `@main(` after an import of `main` from `hydra`.
pub fn looks_like_hydra_app(source: &str) -> bool {
    let decorators = || {
        source
            .lines()
            .map(str::trim_start)
            .filter_map(|line| line.strip_prefix('@'))
            .map(str::trim_start)
    };
    let imports_main = source.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("from hydra import") && line.split([' ', ',', '(']).any(|w| w == "main")
    });
    decorators().any(|d| d.starts_with("hydra.main"))
        || (imports_main && decorators().any(|d| d.starts_with("main(")))
}

/// `argv` run after the set-up lines, by a shell that then becomes the command (`exec`), so
/// signals and the exit status are the command's own.
pub fn with_pre_script(pre_script: &[String], argv: Vec<String>) -> Vec<String> {
    if pre_script.is_empty() {
        return argv;
    }
    let script = format!("{}\nexec \"$@\"", pre_script.join("\n"));
    [
        "/bin/sh".to_string(),
        "-c".into(),
        script,
        "hsm-task".into(),
    ]
    .into_iter()
    .chain(argv)
    .collect()
}

/// The environment every task attempt gets on top of the inherited one: the command's `env`,
/// then hsm's own variables (which a config cannot override).
pub fn command_env(spec: &CommandSpec, ctx: &LaunchContext) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    env.extend(task_env(ctx));
    env
}

/// hsm's own variables of a task attempt.
pub fn task_env(ctx: &LaunchContext) -> Vec<(String, String)> {
    [
        ("HSM_SWEEP_ID", ctx.sweep_id.to_string()),
        ("HSM_TASK_ID", ctx.task_id.to_string()),
        ("HSM_TASK_INDEX", ctx.task_index.to_string()),
        ("HSM_ATTEMPT", ctx.attempt.to_string()),
        ("HSM_OUTPUT_DIR", ctx.output_dir.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

/// The argv as one line a person can paste into a POSIX shell (for `command.txt`): arguments made
/// only of characters no shell treats specially stay bare, the rest are single-quoted with `'`
/// written `'\''`. The same safe set as Python's `shlex.quote`, except that a first word
/// containing `=` is quoted so the shell cannot take it for a variable assignment.
pub fn shell_display(argv: &[String]) -> String {
    argv.iter()
        .enumerate()
        .map(|(i, arg)| shell_quote(arg, i == 0))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str, first_word: bool) -> String {
    let safe = !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '@' | '%' | '+' | ':' | ',' | '.' | '/' | '-')
                || (c == '=' && !first_word)
        });
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn render_params(style: ArgStyle, params: &Params) -> Result<Vec<String>, CommandError> {
    let mut args = Vec::new();
    for (key, value) in params {
        match style {
            ArgStyle::Hydra => {
                check_hydra_value(value).map_err(|source| CommandError::Render {
                    key: key.clone(),
                    source,
                })?;
                args.push(hydra_override(key, value));
            }
            ArgStyle::Argparse => args.extend(argparse_args(key, value)),
        }
    }
    Ok(args)
}

fn placeholder_value(
    name: &str,
    spec: &CommandSpec,
    script: Option<&str>,
    ctx: &LaunchContext,
) -> Result<String, CommandError> {
    Ok(match name {
        "python" => spec.python.clone(),
        "script" => script.ok_or(CommandError::NoScript)?.to_string(),
        "output_dir" => ctx.output_dir.to_string(),
        "sweep_id" => ctx.sweep_id.to_string(),
        "task_id" => ctx.task_id.to_string(),
        "task_index" => ctx.task_index.to_string(),
        "attempt" => ctx.attempt.to_string(),
        "group" => ctx.group.to_string(),
        // `parse_template` admits only the names above and turns `{overrides}` into
        // `Element::Overrides`, so nothing else reaches here.
        _ => String::new(),
    })
}

fn parse_template(template: &[String]) -> Result<Vec<Element>, CommandError> {
    if template.is_empty() {
        return Err(CommandError::EmptyTemplate);
    }
    let elements = template
        .iter()
        .enumerate()
        .map(|(i, text)| parse_element(i + 1, text))
        .collect::<Result<Vec<_>, _>>()?;
    if !elements.contains(&Element::Overrides) {
        return Err(CommandError::NoOverrides);
    }
    Ok(elements)
}

fn parse_element(element: usize, text: &str) -> Result<Element, CommandError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '{' if rest.starts_with('{') => {
                literal.push('{');
                rest = &rest[1..];
            }
            '}' if rest.starts_with('}') => {
                literal.push('}');
                rest = &rest[1..];
            }
            '}' => {
                return Err(CommandError::UnmatchedBrace {
                    element,
                    text: text.to_string(),
                })
            }
            '{' => {
                let Some(close) = rest.find('}') else {
                    return Err(CommandError::UnclosedBrace {
                        element,
                        text: text.to_string(),
                    });
                };
                let name = &rest[..close];
                rest = &rest[close + 1..];
                let Some(known) = PLACEHOLDERS.iter().find(|known| **known == name) else {
                    return Err(CommandError::UnknownPlaceholder {
                        name: name.to_string(),
                        element,
                        text: text.to_string(),
                    });
                };
                if *known == "overrides" {
                    if text == "{overrides}" {
                        return Ok(Element::Overrides);
                    }
                    return Err(CommandError::EmbeddedOverrides {
                        element,
                        text: text.to_string(),
                    });
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Placeholder(known));
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(Element::Text(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LaunchContext<'static> {
        LaunchContext {
            sweep_id: "sweep_20250101_120000",
            task_index: 7,
            task_id: "task_007",
            attempt: 2,
            output_dir: "/proj/sweeps/outputs/sweep_20250101_120000/tasks/task_007/results",
            group: "sweep_20250101_120000",
            script_override: None,
        }
    }

    fn spec() -> CommandSpec {
        CommandSpec {
            script: Some("train.py".into()),
            ..CommandSpec::default()
        }
    }

    fn params() -> Params {
        let mut params = Params::new();
        params.insert("model.lr".into(), Value::Float(1e-5));
        params.insert("name".into(), Value::Str("a b's $HOME".into()));
        params.insert(
            "layers".into(),
            Value::List(vec![Value::Int(64), Value::Int(32)]),
        );
        params
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const OUT: &str = "/proj/sweeps/outputs/sweep_20250101_120000/tasks/task_007/results";

    #[test]
    fn default_hydra_command() {
        let argv = build_argv(&spec(), &params(), &ctx()).unwrap();
        assert_eq!(
            argv,
            strings(&[
                "python3",
                "train.py",
                "model.lr=1e-05",
                "name=\"a b's $HOME\"",
                "layers=[64,32]",
                &format!("output.dir={OUT}"),
            ])
        );
        let with_wandb = CommandSpec {
            wandb_group: true,
            ..spec()
        };
        let argv = build_argv(&with_wandb, &params(), &ctx()).unwrap();
        assert_eq!(
            argv[5..],
            strings(&[
                &format!("output.dir={OUT}"),
                "wandb.group=sweep_20250101_120000"
            ])
        );
    }

    #[test]
    fn hydra_app_gets_added_keys_with_plus_plus_and_its_own_run_dir() {
        let hydra = CommandSpec {
            hydra: Some(true),
            ..spec()
        };
        let argv = build_argv(&hydra, &params(), &ctx()).unwrap();
        assert_eq!(
            argv[2..],
            strings(&[
                "model.lr=1e-05",
                "name=\"a b's $HOME\"",
                "layers=[64,32]",
                &format!("++output.dir={OUT}"),
                &format!("hydra.run.dir={OUT}"),
            ])
        );
        let with_wandb = CommandSpec {
            wandb_group: true,
            ..hydra.clone()
        };
        let argv = build_argv(&with_wandb, &params(), &ctx()).unwrap();
        assert_eq!(argv.last().unwrap(), "++wandb.group=sweep_20250101_120000");
        // A path with spaces stays one quoted Hydra value after the `++`.
        let context = LaunchContext {
            output_dir: "/my proj/out",
            ..ctx()
        };
        let argv = build_argv(&hydra, &Params::new(), &context).unwrap();
        assert_eq!(
            argv[2..],
            strings(&[
                "++output.dir='/my proj/out'",
                "hydra.run.dir='/my proj/out'"
            ])
        );
    }

    #[test]
    fn hydra_apps_are_recognised_by_their_decorator() {
        assert!(looks_like_hydra_app(
            "import hydra\n\n@hydra.main(version_base=None, config_path='.', config_name='config')\ndef main(cfg):\n    pass\n"
        ));
        assert!(looks_like_hydra_app(
            "from hydra import main, compose\n  @ main(config_path=None)\ndef f(c): ...\n"
        ));
        assert!(!looks_like_hydra_app(
            "import argparse\n# @hydra.main is not used here\nparser = argparse.ArgumentParser()\n"
        ));
        // `@main(` alone is some other decorator.
        assert!(!looks_like_hydra_app(
            "from click import main\n@main()\ndef f(): ...\n"
        ));
    }

    #[test]
    fn hydra_output_dir_with_spaces_is_quoted_for_hydra() {
        let context = LaunchContext {
            output_dir: "/my proj/out",
            ..ctx()
        };
        let spec = CommandSpec {
            wandb_group: false,
            ..spec()
        };
        let argv = build_argv(&spec, &Params::new(), &context).unwrap();
        assert_eq!(
            argv,
            strings(&["python3", "train.py", "output.dir='/my proj/out'"])
        );
    }

    #[test]
    fn default_argparse_command() {
        let spec = CommandSpec {
            style: ArgStyle::Argparse,
            ..spec()
        };
        let mut params = params();
        params.insert("seed".into(), Value::Null);
        let argv = build_argv(&spec, &params, &ctx()).unwrap();
        assert_eq!(
            argv,
            strings(&[
                "python3",
                "train.py",
                "--model.lr",
                "1e-05",
                "--name",
                "a b's $HOME",
                "--layers",
                "64",
                "32",
            ])
        );
    }

    #[test]
    fn script_override_beats_the_config() {
        let context = LaunchContext {
            script_override: Some("other.py"),
            ..ctx()
        };
        let argv = build_argv(&spec(), &Params::new(), &context).unwrap();
        assert_eq!(argv[1], "other.py");
        // It also fills in for a missing config script.
        let no_script = CommandSpec::default();
        assert_eq!(
            build_argv(&no_script, &Params::new(), &context).unwrap()[1],
            "other.py"
        );
    }

    #[test]
    fn missing_script_is_an_error() {
        let err = build_argv(&CommandSpec::default(), &params(), &ctx()).unwrap_err();
        assert_eq!(err, CommandError::NoScript);
        assert!(err
            .to_string()
            .contains("command.script in .hsm/config.yaml"));
        assert!(err.to_string().contains("script: in the sweep file"));
        let empty = CommandSpec {
            script: Some(String::new()),
            ..CommandSpec::default()
        };
        assert_eq!(
            build_argv(&empty, &params(), &ctx()),
            Err(CommandError::NoScript)
        );
    }

    #[test]
    fn a_pre_script_runs_first_in_a_shell_that_becomes_the_command() {
        let spec = CommandSpec {
            script: Some("train.py".into()),
            style: ArgStyle::Argparse,
            pre_script: vec![
                "module load cuda/12.1".into(),
                "source .venv/bin/activate".into(),
            ],
            ..CommandSpec::default()
        };
        let argv = build_argv(&spec, &Params::new(), &ctx()).unwrap();
        assert_eq!(
            argv,
            vec![
                "/bin/sh",
                "-c",
                "module load cuda/12.1\nsource .venv/bin/activate\nexec \"$@\"",
                "hsm-task",
                "python3",
                "train.py"
            ]
        );
        // It really runs that way: the set-up's variable reaches the command, `$@` intact.
        let out = std::process::Command::new(&argv[0])
            .args(
                &with_pre_script(
                    &["GREETING='hello there'".into(), "export GREETING".into()],
                    vec![
                        "sh".into(),
                        "-c".into(),
                        "echo \"$GREETING\" \"$1\"".into(),
                        "x".into(),
                        "a b".into(),
                    ],
                )[1..],
            )
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello there a b\n");
    }

    #[test]
    fn a_source_setup_overrides_the_project_wide_one() {
        let base = CommandSpec {
            conda_env: Some("base".into()),
            env: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
            pre_script: vec!["echo base".into()],
            ..CommandSpec::default()
        };
        let same = base.for_source(None, &SourceSetup::default());
        assert_eq!(
            (
                same.python.as_str(),
                same.conda_env.as_deref(),
                same.pre_script.clone()
            ),
            ("python3", Some("base"), vec!["echo base".to_string()])
        );
        let over = base.for_source(
            Some("/opt/py/bin/python"),
            &SourceSetup {
                conda_env: Some("gpu".into()),
                env: vec![("B".into(), "3".into()), ("C".into(), "4".into())],
                pre_script: vec!["module load cuda".into()],
            },
        );
        assert_eq!(over.python, "/opt/py/bin/python");
        assert_eq!(over.conda_env.as_deref(), Some("gpu"));
        assert_eq!(
            over.env,
            [("A", "1"), ("B", "3"), ("C", "4")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(over.pre_script, vec!["module load cuda"]);
        // hsm's variables come last, so the command's `env` cannot override them.
        let env = command_env(&over, &ctx());
        assert_eq!(env[0], ("A".to_string(), "1".to_string()));
        assert!(env.last().unwrap().0.starts_with("HSM_"));
    }

    #[test]
    fn conda_prefix() {
        let spec = CommandSpec {
            conda_env: Some("ml env".into()),
            wandb_group: false,
            ..spec()
        };
        let argv = build_argv(&spec, &Params::new(), &ctx()).unwrap();
        assert_eq!(
            argv,
            strings(&[
                "conda",
                "run",
                "-n",
                "ml env",
                "--no-capture-output",
                "python3",
                "train.py",
                &format!("output.dir={OUT}"),
            ])
        );
    }

    #[test]
    fn template_with_overrides_and_placeholders() {
        let spec = CommandSpec {
            template: Some(strings(&[
                "{python}",
                "-m",
                "pkg.train",
                "{overrides}",
                "hydra.run.dir={output_dir}",
                "+meta={sweep_id}/{task_id}/{task_index}/{attempt}/{group}",
                "{{literal}}",
            ])),
            script: None,
            ..spec()
        };
        let argv = build_argv(&spec, &params(), &ctx()).unwrap();
        assert_eq!(
            argv,
            strings(&[
                "python3",
                "-m",
                "pkg.train",
                "model.lr=1e-05",
                "name=\"a b's $HOME\"",
                "layers=[64,32]",
                &format!("hydra.run.dir={OUT}"),
                "+meta=sweep_20250101_120000/task_007/7/2/sweep_20250101_120000",
                "{literal}",
            ])
        );
    }

    #[test]
    fn template_in_argparse_style_with_conda_and_script() {
        let spec = CommandSpec {
            template: Some(strings(&[
                "{python}",
                "{script}",
                "--out",
                "{output_dir}",
                "{overrides}",
            ])),
            style: ArgStyle::Argparse,
            conda_env: Some("ml".into()),
            ..spec()
        };
        let argv = build_argv(&spec, &params(), &ctx()).unwrap();
        assert_eq!(
            argv,
            strings(&[
                "conda",
                "run",
                "-n",
                "ml",
                "--no-capture-output",
                "python3",
                "train.py",
                "--out",
                OUT,
                "--model.lr",
                "1e-05",
                "--name",
                "a b's $HOME",
                "--layers",
                "64",
                "32",
            ])
        );
    }

    #[test]
    fn template_script_placeholder_needs_a_script() {
        let spec = CommandSpec {
            template: Some(strings(&["{python}", "{script}", "{overrides}"])),
            script: None,
            ..spec()
        };
        assert_eq!(
            build_argv(&spec, &params(), &ctx()),
            Err(CommandError::NoScript)
        );
    }

    #[test]
    fn template_errors() {
        let check = |template: &[&str]| validate_template(&strings(template));
        assert_eq!(check(&[]), Err(CommandError::EmptyTemplate));
        assert_eq!(
            check(&["python", "train.py"]),
            Err(CommandError::NoOverrides)
        );
        assert_eq!(
            check(&["python", "{overrides}", "out={outdir}"]),
            Err(CommandError::UnknownPlaceholder {
                name: "outdir".into(),
                element: 3,
                text: "out={outdir}".into(),
            })
        );
        assert_eq!(
            check(&["python", "{overrides}", "a{output_dir"]),
            Err(CommandError::UnclosedBrace {
                element: 3,
                text: "a{output_dir".into(),
            })
        );
        assert_eq!(
            check(&["python}", "{overrides}"]),
            Err(CommandError::UnmatchedBrace {
                element: 1,
                text: "python}".into(),
            })
        );
        assert_eq!(
            check(&["python", "x={overrides}"]),
            Err(CommandError::EmbeddedOverrides {
                element: 2,
                text: "x={overrides}".into(),
            })
        );
        assert_eq!(
            check(&["python", "{overrides}", "{}"]),
            Err(CommandError::UnknownPlaceholder {
                name: String::new(),
                element: 3,
                text: "{}".into(),
            })
        );
        assert!(check(&["{python}", "{{x}}", "é{task_id}ü", "{overrides}"]).is_ok());

        let message = check(&["python", "{overrides}", "out={outdir}"])
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("unknown placeholder {outdir} in template element 3"));
        assert!(message.contains("{output_dir}"));
    }

    #[test]
    fn template_errors_surface_from_build_argv() {
        let spec = CommandSpec {
            template: Some(strings(&["{overrides}", "{nope}"])),
            ..spec()
        };
        assert!(matches!(
            build_argv(&spec, &params(), &ctx()),
            Err(CommandError::UnknownPlaceholder { .. })
        ));
    }

    #[test]
    fn values_hydra_cannot_carry_are_errors() {
        let mut params = Params::new();
        params.insert("tag".into(), Value::Str("???".into()));
        let err = build_argv(&spec(), &params, &ctx()).unwrap_err();
        assert_eq!(
            err,
            CommandError::Render {
                key: "tag".into(),
                source: RenderError::MissingMarker,
            }
        );
        assert_eq!(err.to_string(), "parameter tag cannot be passed to Hydra");
        // argparse passes it verbatim.
        let argparse = CommandSpec {
            style: ArgStyle::Argparse,
            ..spec()
        };
        assert_eq!(
            build_argv(&argparse, &params, &ctx()).unwrap()[2..],
            strings(&["--tag", "???"])
        );
    }

    #[test]
    fn environment() {
        assert_eq!(
            task_env(&ctx()),
            vec![
                (
                    "HSM_SWEEP_ID".to_string(),
                    "sweep_20250101_120000".to_string()
                ),
                ("HSM_TASK_ID".to_string(), "task_007".to_string()),
                ("HSM_TASK_INDEX".to_string(), "7".to_string()),
                ("HSM_ATTEMPT".to_string(), "2".to_string()),
                ("HSM_OUTPUT_DIR".to_string(), OUT.to_string()),
            ]
        );
    }

    /// A POSIX-shell word splitter for what `shell_display` produces: bare words and
    /// single-quoted runs, joined without spaces.
    fn shell_split(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut in_quotes = false;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_quotes = !in_quotes;
                    word.get_or_insert_with(String::new);
                }
                ' ' if !in_quotes => words.extend(word.take()),
                '\\' if !in_quotes => {
                    word.get_or_insert_with(String::new).extend(chars.next());
                }
                other => word.get_or_insert_with(String::new).push(other),
            }
        }
        assert!(!in_quotes, "unbalanced quotes in {line}");
        words.extend(word);
        words
    }

    #[test]
    fn shell_display_round_trips() {
        let argv = strings(&[
            "python3",
            "train.py",
            "lr=0.1",
            "name='a b'",
            "it's",
            "$HOME",
            "",
            "a\"b",
            "tab\there",
            "*",
            "~x",
            "#x",
            "semi;colon",
            "back\\slash",
            "héllo",
        ]);
        let line = shell_display(&argv);
        assert_eq!(shell_split(&line), argv);
        assert_eq!(
            shell_display(&strings(&["python3", "it's", "a b", "$x", ""])),
            "python3 'it'\\''s' 'a b' '$x' ''"
        );
        // A first word with `=` would be a variable assignment.
        assert_eq!(shell_display(&strings(&["A=b", "c=d"])), "'A=b' c=d");
    }
}
