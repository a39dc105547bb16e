// A Java code context: one JShell, evaluating in this JVM, driven over sandcell's line protocol.
//
// Requests arrive on fd 3, events leave on fd 4, as lines of tab-separated,
// hex-encoded fields (see contexts/tagged.py). Snippets run in this JVM
// (JShell's local execution, no second JVM to start): System.out and
// System.err are the process's own fds 1 and 2, streamed by the supervisor.
//
// As in IJava (what E2B runs), a cell is split into snippets that run in
// turn, state carries over between cells, and the value of the last snippet,
// when it is an expression, is the cell's main result: a String as it is, an
// image as a PNG, anything else as JShell shows it. The run's environment
// variables become system properties for the cell (Java cannot change its own
// environment); the process's environment is mirrored into them at start, as
// E2B's Java kernel sees its sandbox's variables.
//
// SIGINT stops the running snippet (JShell's stop) and keeps the state.

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

import jdk.jshell.DeclarationSnippet;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.ExpressionSnippet;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;
import jdk.jshell.VarSnippet;
import jdk.jshell.execution.LocalExecutionControl;
import jdk.jshell.spi.ExecutionControl;
import jdk.jshell.spi.ExecutionControlProvider;
import jdk.jshell.spi.ExecutionEnv;

final class JavaKernel {
    // What JShell's own tool imports at start.
    static final String[] IMPORTS = {
        "java.io.*", "java.math.*", "java.net.*", "java.nio.file.*", "java.util.*", "java.util.concurrent.*",
        "java.util.function.*", "java.util.prefs.*", "java.util.regex.*", "java.util.stream.*",
    };
    static final HexFormat HEX = HexFormat.of();

    /**
     * Local execution that can hand over a variable's object itself, so a result can be made
     * from it: while {@code capturing}, reading a variable keeps its value and returns no text
     * (JShell's text of a large value costs as much again as the value).
     */
    static final class Control extends LocalExecutionControl {
        boolean capturing;
        Object captured;

        @Override
        public String varValue(String className, String varName) throws RunException, EngineTerminationException, InternalException {
            if (!capturing) {
                return super.varValue(className, varName);
            }
            try {
                Field field = findClass(className).getDeclaredField(varName);
                field.setAccessible(true);
                captured = field.get(null);
            } catch (ReflectiveOperationException | RuntimeException e) {
                captured = null;
            }
            return "";
        }
    }

    final OutputStream events;
    final PrintStream out = System.out;
    final PrintStream err = System.err;
    final Control control = new Control();
    final JShell shell;
    String token = "";
    volatile boolean interrupted;

    JavaKernel(OutputStream events) {
        this.events = events;
        ExecutionControlProvider local = new ExecutionControlProvider() {
            public String name() {
                return "sandcell";
            }

            public ExecutionControl generate(ExecutionEnv env, Map<String, String> parameters) {
                return control;
            }
        };
        shell = JShell.builder().executionEngine(local, Map.of()).out(out).err(err).in(InputStream.nullInputStream()).build();
    }

    // -- events ---------------------------------------------------------------------
    static String hex(String text) {
        return HEX.formatHex(text.getBytes(StandardCharsets.UTF_8));
    }

    synchronized void send(String... fields) {
        out.flush();
        err.flush();
        try {
            events.write((String.join("\t", fields) + "\n").getBytes(StandardCharsets.US_ASCII));
            events.flush();
        } catch (IOException e) {
            // The code closed or broke the event channel: nothing can report for this context any more.
            err.println("sandcell: event channel lost (" + e.getMessage() + ")");
            Runtime.getRuntime().halt(70);
        }
    }

    void sendError(String name, String value, String traceback) {
        send("error", token, hex(name), hex(value == null ? "" : value), hex(traceback));
    }

    // -- results --------------------------------------------------------------------
    /** The cell's result from the last snippet's event, as IJava gives it: expressions only, and not null. */
    void sendResult(SnippetEvent event) {
        Snippet.SubKind kind = event.snippet().subKind();
        if (event.value() == null || !(kind == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND || kind == Snippet.SubKind.VAR_VALUE_SUBKIND
                || kind == Snippet.SubKind.OTHER_EXPRESSION_SUBKIND)) {
            return;
        }
        Object value = valueOf(event);
        if (value == null && "null".equals(event.value())) {
            return;
        }
        List<String> fields = new ArrayList<>(List.of("result", token, "1"));
        byte[] png = value == null ? null : png(value);
        if (png != null) {
            fields.add("image/png");
            fields.add(HEX.formatHex(png));
        }
        String text = value instanceof String || value instanceof Character ? value.toString() : event.value();
        fields.add("text/plain");
        fields.add(hex(text));
        send(fields.toArray(String[]::new));
    }

    /** The object an expression snippet gave, read back through its variable; null when it has none. */
    Object valueOf(SnippetEvent event) {
        VarSnippet variable = null;
        if (event.snippet() instanceof VarSnippet) {
            variable = (VarSnippet) event.snippet();
        } else if (event.snippet() instanceof ExpressionSnippet) {
            String name = ((ExpressionSnippet) event.snippet()).name();
            variable = shell.variables().filter(v -> v.name().equals(name)).reduce((first, second) -> second).orElse(null);
        }
        if (variable == null) {
            return null;
        }
        control.captured = null;
        control.capturing = true;
        try {
            shell.varValue(variable);
        } catch (RuntimeException e) {
            return null;
        } finally {
            control.capturing = false;
        }
        return control.captured;
    }

    static byte[] png(Object value) {
        try {
            if (value instanceof java.awt.image.RenderedImage) {
                ByteArrayOutputStream bytes = new ByteArrayOutputStream();
                javax.imageio.ImageIO.write((java.awt.image.RenderedImage) value, "png", bytes);
                return bytes.toByteArray();
            }
        } catch (IOException | LinkageError e) {
            // no java.desktop module, or an image ImageIO cannot write: the text stands alone
        }
        return null;
    }

    // -- errors ---------------------------------------------------------------------
    void sendCompileError(Snippet snippet) {
        List<Diag> diagnostics = shell.diagnostics(snippet).filter(Diag::isError).collect(Collectors.toList());
        String source = snippet.source();
        StringBuilder traceback = new StringBuilder();
        for (Diag diag : diagnostics) {
            int start = (int) Math.max(0, diag.getStartPosition());
            int lineStart = source.lastIndexOf('\n', Math.max(0, start - 1)) + 1;
            int lineEnd = source.indexOf('\n', start);
            String line = source.substring(lineStart, lineEnd < 0 ? source.length() : lineEnd);
            traceback.append(line).append('\n').append(" ".repeat(Math.max(0, start - lineStart))).append("^\n");
            traceback.append(diag.getMessage(null)).append("\n\n");
        }
        String value;
        if (!diagnostics.isEmpty()) {
            value = diagnostics.get(0).getMessage(null);
        } else if (snippet instanceof DeclarationSnippet) {
            value = "unresolved: " + shell.unresolvedDependencies((DeclarationSnippet) snippet).collect(Collectors.joining(", "));
        } else {
            value = "the snippet was rejected: " + source.strip();
        }
        sendError("CompilationException", value, traceback.length() > 0 ? traceback.toString().strip() : value);
    }

    void sendException(JShellException exception) {
        if (exception instanceof UnresolvedReferenceException) {
            DeclarationSnippet snippet = ((UnresolvedReferenceException) exception).getSnippet();
            String missing = shell.unresolvedDependencies(snippet).collect(Collectors.joining(", "));
            String value = snippet.name() + " cannot be used until this is declared: " + missing;
            sendError("UnresolvedReferenceException", value, value);
            return;
        }
        String name;
        if (exception instanceof EvalException) {
            String className = ((EvalException) exception).getExceptionClassName();
            name = className.substring(className.lastIndexOf('.') + 1);
        } else {
            name = exception.getClass().getSimpleName();
        }
        sendError(name, exception.getMessage(), traceback(exception));
    }

    static String traceback(Throwable exception) {
        StringBuilder text = new StringBuilder();
        for (Throwable cause = exception; cause != null; cause = cause.getCause()) {
            String className = cause instanceof EvalException ? ((EvalException) cause).getExceptionClassName() : cause.getClass().getName();
            if (cause != exception) {
                text.append("Caused by: ");
            }
            text.append(className);
            if (cause.getMessage() != null) {
                text.append(": ").append(cause.getMessage());
            }
            text.append('\n');
            for (StackTraceElement frame : cause.getStackTrace()) {
                text.append("\tat ").append(frame).append('\n');
            }
        }
        return text.toString().strip();
    }

    // -- running a cell ---------------------------------------------------------------
    /** Evaluates one snippet; false when the cell must stop (an error, or an interrupt). */
    boolean evaluate(String source, boolean last) {
        List<SnippetEvent> events = shell.eval(source);
        if (interrupted) {
            sendError("KeyboardInterrupt", "interrupted", "");
            return false;
        }
        SnippetEvent own = null;
        for (SnippetEvent event : events) {
            if (event.causeSnippet() == null) {
                own = event;
                if (event.exception() != null) {
                    sendException(event.exception());
                    return false;
                }
                if (!event.status().isDefined()) {  // rejected, or declared with what does not exist yet
                    sendCompileError(event.snippet());
                    return false;
                }
            }
        }
        if (last && own != null) {
            sendResult(own);
        }
        return true;
    }

    String runCell(String code) {
        SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
        String remaining = code;
        while (!remaining.isBlank()) {
            SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(remaining);
            // Incomplete or unreadable input goes to JShell as it is: its compiler says what is wrong.
            boolean complete = info.completeness().isComplete();
            String source = complete ? info.source() : remaining;
            remaining = complete ? info.remaining() : "";
            if (!evaluate(source, remaining.isBlank())) {
                return "error";
            }
        }
        return "ok";
    }

    /** Sets the run's variables as system properties; returns what to put back. */
    static Map<String, String> setProperties(List<String> assignments) {
        Map<String, String> saved = new HashMap<>();
        for (String assignment : assignments) {
            int equals = assignment.indexOf('=');
            String name = assignment.substring(0, equals);
            String value = new String(HEX.parseHex(assignment.substring(equals + 1)), StandardCharsets.UTF_8);
            saved.putIfAbsent(name, System.getProperty(name));
            System.setProperty(name, value);
        }
        return saved;
    }

    static void restoreProperties(Map<String, String> saved) {
        saved.forEach((name, value) -> {
            if (value == null) {
                System.clearProperty(name);
            } else {
                System.setProperty(name, value);
            }
        });
    }

    void serve(BufferedReader requests) throws IOException {
        send("ready");
        String line;
        while ((line = requests.readLine()) != null) {
            String[] fields = line.split("\t", -1);
            if (fields.length < 3 || !fields[0].equals("run")) {
                continue;
            }
            token = fields[1];
            interrupted = false;  // an interrupt that came between cells is not this cell's
            String status;
            Map<String, String> saved = setProperties(List.of(fields).subList(3, fields.length));
            try {
                status = runCell(new String(HEX.parseHex(fields[2]), StandardCharsets.UTF_8));
            } catch (RuntimeException | LinkageError e) {
                sendError(e.getClass().getSimpleName(), e.getMessage(), traceback(e));
                status = "error";
            } finally {
                restoreProperties(saved);
            }
            send("done", token, status);
        }
    }

    /** What the first cell would otherwise pay for: the compiler and the execution path, warmed up. */
    void warmUp() {
        for (String name : IMPORTS) {
            shell.eval("import " + name + ";");
        }
        shell.sourceCodeAnalysis().analyzeCompletion("{ int warm = 1 + 1; }");
        shell.eval("{ int warm = 1 + 1; }");
    }

    public static void main(String[] args) throws IOException {
        System.getenv().forEach((name, value) -> {
            if (System.getProperty(name) == null) {
                System.setProperty(name, value);
            }
        });
        JavaKernel kernel = new JavaKernel(new FileOutputStream("/proc/self/fd/4"));
        sun.misc.Signal.handle(new sun.misc.Signal("INT"), signal -> {
            kernel.interrupted = true;
            kernel.shell.stop();
        });
        kernel.warmUp();
        kernel.serve(new BufferedReader(new InputStreamReader(new FileInputStream("/proc/self/fd/3"), StandardCharsets.US_ASCII)));
        kernel.shell.close();
        System.exit(0);
    }
}
