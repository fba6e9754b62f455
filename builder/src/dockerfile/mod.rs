//! The Dockerfile as data: parsed with `parse-dockerfile` (positions, heredocs, parser
//! directives) into stages of steps whose arguments are still unexpanded, because expansion
//! depends on build arguments and on the `ENV` state reached while building.

pub mod expand;
mod flags;
pub mod words;

pub use flags::{CopyFlags, HealthcheckFlags};

use parse_dockerfile::{Command, HealthcheckArguments, Instruction, JsonOrStringArray, Source};

use crate::error::{Error, Result};

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The file name used in error messages (`Dockerfile`, `build/Dockerfile.prod`).
    pub file: String,
    pub escape: char,
    /// `ARG`s before the first `FROM`; only `FROM` lines can use them unless a stage
    /// re-declares them.
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

/// One `FROM` and the steps under it.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: Option<String>,
    /// The image reference as written (expanded with the global args when building).
    pub base: String,
    pub line: usize,
    pub steps: Vec<Step>,
}

/// One instruction with its place in the file.
#[derive(Debug, Clone)]
pub struct Step {
    pub line: usize,
    pub column: usize,
    /// The instruction as written on its first line (continuations joined), for the log.
    pub text: String,
    pub op: Op,
}

/// Exec form (`["a", "b"]`) or shell form (run through the stage's `SHELL`).
#[derive(Debug, Clone, PartialEq)]
pub enum CommandForm {
    Exec(Vec<String>),
    Shell(String),
}

/// A `COPY`/`ADD` source: a context (or `--from` stage) path, or an inline heredoc.
#[derive(Debug, Clone)]
pub enum CopySource {
    Path(String),
    HereDoc { content: String, expand: bool },
}

/// What a step does; word arguments are unexpanded.
#[derive(Debug, Clone)]
pub enum Op {
    Arg(Vec<(String, Option<String>)>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Cmd(CommandForm),
    Entrypoint(CommandForm),
    Shell(Vec<String>),
    Healthcheck(Option<(HealthcheckFlags, CommandForm)>),
    /// The trigger instruction as written, recorded into the image config.
    Onbuild(String),
    Maintainer(String),
    Copy {
        sources: Vec<CopySource>,
        dest: String,
        flags: CopyFlags,
        add: bool,
    },
    Run {
        command: CommandForm,
        network_none: bool,
    },
}

/// Parses a Dockerfile; syntax errors and unknown instructions name file, line and column.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile> {
    let parsed = parse_dockerfile::parse(text).map_err(|e| Error::Dockerfile {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let escape = parsed.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
    let starts: Vec<usize> = parsed.instructions.iter().map(|i| keyword_start(i)).collect();
    let mut out = Dockerfile { file: file.to_string(), escape, global_args: Vec::new(), stages: Vec::new() };
    for (index, instruction) in parsed.instructions.iter().enumerate() {
        let start = starts[index];
        let end = starts.get(index + 1).copied().unwrap_or(text.len());
        let (line, column) = position(text, start);
        let ctx = StepText { text, escape, start, end };
        if let Instruction::From(from) = instruction {
            out.stages.push(Stage {
                name: from.as_.as_ref().map(|(_, n)| n.value.to_lowercase()),
                base: from.image.value.to_string(),
                line,
                steps: Vec::new(),
            });
            continue;
        }
        let op = convert(instruction, &ctx).map_err(|message| Error::Dockerfile {
            file: file.to_string(),
            line,
            column,
            message,
        })?;
        match (out.stages.last_mut(), op) {
            (None, Op::Arg(args)) => out.global_args.extend(args),
            (None, _) => {
                return Err(Error::Dockerfile {
                    file: file.to_string(),
                    line,
                    column,
                    message: "no build stage in current context (only ARG may come before FROM)".into(),
                });
            }
            (Some(stage), op) => stage.steps.push(Step { line, column, text: ctx.first_line(), op }),
        }
    }
    if out.stages.is_empty() {
        return Err(Error::Dockerfile {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: "no FROM instruction".into(),
        });
    }
    Ok(out)
}

/// The source range of one instruction, for texts Docker keeps as written.
struct StepText<'a> {
    text: &'a str,
    escape: char,
    start: usize,
    end: usize,
}

impl StepText<'_> {
    fn first_line(&self) -> String {
        join_continuations(&self.text[self.start..self.end], self.escape)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// The rest of the instruction from `from`, with heredoc bodies kept (the shell reads them).
    fn raw_from(&self, from: usize) -> String {
        self.text[from..self.end].trim_end().to_string()
    }
}

fn keyword_start(instruction: &Instruction<'_>) -> usize {
    match instruction {
        Instruction::Add(i) => i.add.span.start,
        Instruction::Arg(i) => i.arg.span.start,
        Instruction::Cmd(i) => i.cmd.span.start,
        Instruction::Copy(i) => i.copy.span.start,
        Instruction::Entrypoint(i) => i.entrypoint.span.start,
        Instruction::Env(i) => i.env.span.start,
        Instruction::Expose(i) => i.expose.span.start,
        Instruction::From(i) => i.from.span.start,
        Instruction::Healthcheck(i) => i.healthcheck.span.start,
        Instruction::Label(i) => i.label.span.start,
        Instruction::Maintainer(i) => i.maintainer.span.start,
        Instruction::Onbuild(i) => i.onbuild.span.start,
        Instruction::Run(i) => i.run.span.start,
        Instruction::Shell(i) => i.shell.span.start,
        Instruction::Stopsignal(i) => i.stopsignal.span.start,
        Instruction::User(i) => i.user.span.start,
        Instruction::Volume(i) => i.volume.span.start,
        Instruction::Workdir(i) => i.workdir.span.start,
        _ => 0,
    }
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Joins `escape`-newline continuations and drops comment and blank lines inside them, as
/// Docker does before keeping a shell-form command.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut continuing = false;
    for line in raw.lines() {
        let trimmed = line.trim_start();
        if continuing && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let body = line.trim_end();
        match body.strip_suffix(escape) {
            Some(head) => {
                out.push_str(head);
                continuing = true;
            }
            None => {
                out.push_str(line);
                break;
            }
        }
    }
    out.trim().to_string()
}

fn command(cmd: &Command<'_>, ctx: &StepText<'_>) -> CommandForm {
    match cmd {
        Command::Exec(args) => CommandForm::Exec(args.value.iter().map(|a| a.value.to_string()).collect()),
        Command::Shell(s) => {
            CommandForm::Shell(join_continuations(&ctx.text[s.span.start..ctx.end], ctx.escape))
        }
        _ => CommandForm::Shell(String::new()),
    }
}

fn convert(instruction: &Instruction<'_>, ctx: &StepText<'_>) -> Result<Op, String> {
    let escape = ctx.escape;
    Ok(match instruction {
        Instruction::Arg(i) => Op::Arg(words::arg_declarations(&i.arguments.value, escape)),
        Instruction::Env(i) => Op::Env(words::name_values(&i.arguments.value, escape, "ENV")?),
        Instruction::Label(i) => Op::Label(words::name_values(&i.arguments.value, escape, "LABEL")?),
        Instruction::Workdir(i) => Op::Workdir(i.arguments.value.to_string()),
        Instruction::User(i) => Op::User(i.arguments.value.to_string()),
        Instruction::Stopsignal(i) => Op::StopSignal(i.arguments.value.to_string()),
        Instruction::Maintainer(i) => Op::Maintainer(i.name.value.to_string()),
        Instruction::Expose(i) => Op::Expose(i.arguments.iter().map(|a| a.value.to_string()).collect()),
        Instruction::Volume(i) => Op::Volume(match &i.arguments {
            JsonOrStringArray::Json(a) => a.value.iter().map(|v| v.value.to_string()).collect(),
            JsonOrStringArray::String(a) => a.iter().map(|v| v.value.to_string()).collect(),
        }),
        Instruction::Shell(i) => Op::Shell(i.arguments.iter().map(|a| a.value.to_string()).collect()),
        Instruction::Cmd(i) => Op::Cmd(command(&i.arguments, ctx)),
        Instruction::Entrypoint(i) => Op::Entrypoint(command(&i.arguments, ctx)),
        Instruction::Healthcheck(i) => match &i.arguments {
            HealthcheckArguments::None { .. } => Op::Healthcheck(None),
            HealthcheckArguments::Cmd { arguments, .. } => {
                let flags = HealthcheckFlags::parse(i.options.iter().map(flag))?;
                Op::Healthcheck(Some((flags, command(arguments, ctx))))
            }
            _ => return Err("unsupported HEALTHCHECK form".into()),
        },
        Instruction::Onbuild(i) => {
            let inner = keyword_start(&i.instruction);
            Op::Onbuild(join_continuations(&ctx.text[inner..ctx.end], escape))
        }
        Instruction::Copy(i) => Op::Copy {
            sources: sources(&i.src),
            dest: i.dest.value.to_string(),
            flags: CopyFlags::parse(i.options.iter().map(flag), "COPY")?,
            add: false,
        },
        Instruction::Add(i) => Op::Copy {
            sources: sources(&i.src),
            dest: i.dest.value.to_string(),
            flags: CopyFlags::parse(i.options.iter().map(flag), "ADD")?,
            add: true,
        },
        Instruction::Run(i) => {
            let mut network_none = false;
            for (name, value) in i.options.iter().map(flag) {
                match (name.as_str(), value.as_deref()) {
                    ("network", Some("none" | "default")) => network_none = true,
                    _ => return Err(format!("RUN flag --{name} is not supported")),
                }
            }
            let command = match (&i.arguments, i.here_docs.is_empty()) {
                (Command::Shell(s), false) => CommandForm::Shell(ctx.raw_from(s.span.start)),
                (other, _) => command(other, ctx),
            };
            Op::Run { command, network_none }
        }
        Instruction::From(_) => unreachable!("FROM starts a stage and is handled by the caller"),
        _ => return Err("unknown instruction".into()),
    })
}

fn flag(f: &parse_dockerfile::Flag<'_>) -> (String, Option<String>) {
    (f.name.value.to_string(), f.value.as_ref().map(|v| v.value.to_string()))
}

fn sources(src: &[Source<'_>]) -> Vec<CopySource> {
    src.iter()
        .map(|s| match s {
            Source::Path(p) => CopySource::Path(p.value.to_string()),
            Source::HereDoc(h) => CopySource::HereDoc { content: h.value.to_string(), expand: h.expand },
            _ => CopySource::Path(String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_steps_and_positions() {
        let text = "ARG BASE=scratch\nFROM $BASE AS Build\nENV A=1 \\\n    B=2\nRUN echo a \\\n  # note\n  && echo b\nFROM build\nCOPY --from=build --chown=1:2 a b /dst/\nCMD [\"x\"]\n";
        let df = parse("Dockerfile", text).unwrap();
        assert_eq!(df.global_args, vec![("BASE".to_string(), Some("scratch".to_string()))]);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        let run = &df.stages[0].steps[1];
        assert_eq!(run.line, 5);
        match &run.op {
            Op::Run { command: CommandForm::Shell(s), .. } => assert_eq!(s, "echo a   && echo b"),
            other => panic!("unexpected {other:?}"),
        }
        match &df.stages[1].steps[0].op {
            Op::Copy { sources, dest, flags, add: false } => {
                assert_eq!(sources.len(), 2);
                assert_eq!(dest, "/dst/");
                assert_eq!(flags.from.as_deref(), Some("build"));
                assert_eq!(flags.chown.as_deref(), Some("1:2"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = parse("Dockerfile", "FROM scratch\nFROBNICATE x\n").unwrap_err();
        match err {
            Error::Dockerfile { line, column, .. } => assert_eq!((line, column), (2, 1)),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn onbuild_keeps_the_trigger_text() {
        let df = parse("Dockerfile", "FROM scratch\nONBUILD RUN echo hi\n").unwrap();
        assert!(matches!(&df.stages[0].steps[0].op, Op::Onbuild(t) if t == "RUN echo hi"));
    }
}
