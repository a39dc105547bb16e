# An R code context: one R process running cells in its global environment.
#
# Requests arrive on fd 3, events leave on fd 4, as lines of tab-separated
# fields, every free-form field hex-encoded (see contexts/tagged.py): base R
# has neither JSON nor base64, and hex needs neither. Each request carries
# the run's token; every event of the run repeats it.
#
# The code's own output stays on fds 1 and 2, as R prints it. As in IRkernel
# (what E2B runs), every visible top-level value becomes a result holding its
# printed text, and every plot a PNG result: plots are drawn on a null device
# that records them, and one that changed is replayed into a PNG when the
# next plot starts and at the end of the cell.
#
# SIGINT interrupts the running cell and leaves the session as it was.

local({
  requests <- file("/proc/self/fd/3", open = "r", raw = TRUE)
  events <- file("/proc/self/fd/4", open = "w", raw = TRUE)

  hex <- function(text) paste(as.character(charToRaw(enc2utf8(text))), collapse = "")
  unhex <- function(field) {
    if (!nzchar(field)) return("")
    pairs <- substring(field, seq.int(1L, nchar(field), 2L), seq.int(2L, nchar(field), 2L))
    text <- rawToChar(as.raw(strtoi(pairs, 16L)))
    Encoding(text) <- "UTF-8"
    text
  }

  token <- ""
  # An event is one line, written with interrupts held off so that it is never cut short.
  send <- function(kind, ...) {
    suspendInterrupts({
      flush(stdout())
      flush(stderr())
      writeLines(paste(c(kind, token, ...), collapse = "\t"), events)
      flush(events)
    })
  }
  # After each result the supervisor says, with an empty line, that it has forwarded
  # what was printed before it; output printed after the result cannot overtake it.
  # (R holds an interrupt back while it waits in readLines: the cell gets it next.)
  send_and_wait <- function(kind, ...) {
    send(kind, ...)
    readLines(requests, n = 1L)
  }
  send_error <- function(name, value, traceback = "") send_and_wait("error", hex(name), hex(value), hex(traceback))
  send_text <- function(text) send_and_wait("result", "0", "text/plain", hex(text))

  # -- plots --------------------------------------------------------------------
  plot_device <- function(...) {
    grDevices::pdf(NULL)
    grDevices::dev.control(displaylist = "enable")
  }
  options(device = plot_device)
  shown <- NULL    # the plot as it was last shown (or as it stood when the cell began)
  pending <- NULL  # a plot drawn in this cell and not shown yet

  current_plot <- function() {
    if (grDevices::dev.cur() == 1L) return(NULL)
    plot <- tryCatch(grDevices::recordPlot(), error = function(e) NULL)
    if (is.null(plot) || length(plot[[1L]]) == 0L) NULL else plot
  }
  builds_upon <- function(earlier, plot) {
    before <- earlier[[1L]]
    now <- plot[[1L]]
    length(now) >= length(before) && identical(now[seq_along(before)], before)
  }
  png_of <- function(plot) {
    path <- tempfile(fileext = ".png")
    previous <- grDevices::dev.cur()
    on.exit({
      unlink(path)
      if (previous != 1L) grDevices::dev.set(previous)
    })
    grDevices::png(path, width = getOption("repr.plot.width", 7), height = getOption("repr.plot.height", 7), units = "in",
                   res = getOption("repr.plot.res", 120), pointsize = getOption("repr.plot.pointsize", 12), type = "cairo")
    tryCatch(grDevices::replayPlot(plot), finally = grDevices::dev.off())
    readBin(path, "raw", file.size(path))
  }
  show_plot <- function(plot) {
    image <- tryCatch(png_of(plot), error = function(e) {
      cat("sandcell: the plot could not be drawn: ", conditionMessage(e), "\n", sep = "", file = stderr())
      NULL
    })
    if (!is.null(image)) send_and_wait("result", "0", "image/png", paste(as.character(image), collapse = ""), "text/plain", hex("<R plot>"))
  }
  # A plot that changed since the last look is pending; one that does not build
  # upon the pending one is a new plot, and the pending one is shown first.
  look_at_plots <- function() {
    plot <- current_plot()
    if (is.null(plot) || identical(plot[[1L]], if (is.null(pending)) shown[[1L]] else pending[[1L]])) return(invisible())
    if (!is.null(pending) && !builds_upon(pending, plot)) show_plot(pending)
    pending <<- plot
  }
  # A new page wipes the display list: look at the old page first.
  setHook("before.plot.new", function() look_at_plots())
  setHook("before.grid.newpage", function() look_at_plots())

  # -- running a cell -------------------------------------------------------------
  on_warning <- function(w) {
    if (getOption("warn", 0) >= 0) {
      call <- conditionCall(w)
      where <- if (is.null(call) || identical(call, cell_call)) "" else paste0("In ", paste(deparse(call, nlines = 1L), collapse = ""), ": ")
      cat("Warning message:\n", where, conditionMessage(w), "\n", sep = "", file = stderr())
    }
    invokeRestart("muffleWarning")
  }
  # The frame that runs each top-level expression: conditions it raises itself
  # (a top-level stop()) have no call of the user's to name.
  cell_call <- quote(eval(expr, envir = .GlobalEnv))
  describe <- function(condition, call = conditionCall(condition)) {
    message <- sub("\n$", "", conditionMessage(condition))
    if (is.null(call) || identical(call, cell_call)) paste0("Error: ", message)
    else paste0("Error in ", paste(deparse(call, nlines = 1L), collapse = ""), ": ", message)
  }
  # The calls of the user's code: those after the cell's frames (eval's own two),
  # without the handlers' at the end (this one, the handler's, R's .handleSimpleError).
  user_calls <- function() {
    calls <- sys.calls()
    start <- match(TRUE, vapply(calls, identical, TRUE, cell_call))
    while (start < length(calls) && identical(calls[[start + 1L]], cell_call)) start <- start + 1L
    calls <- utils::head(calls[-seq_len(start)], -2L)
    n <- length(calls)
    if (n && identical(calls[[n]][[1L]], quote(.handleSimpleError))) calls <- calls[-n]
    calls
  }
  traceback_of <- function(condition, calls) {
    lines <- vapply(seq_along(calls), function(i) paste0(i, ". ", paste(deparse(calls[[i]], nlines = 3L), collapse = "\n   ")), "")
    paste(c(describe(condition), "Traceback:", lines), collapse = "\n")
  }

  run_cell <- function(code) {
    exprs <- tryCatch(parse(text = code, keep.source = FALSE, srcfile = NULL), error = function(e) e)
    if (inherits(exprs, "error")) {
      send_error("ERROR", describe(exprs, call = NULL), describe(exprs, call = NULL))
      return("error")
    }
    shown <<- current_plot()
    pending <<- NULL
    status <- "ok"
    for (expr in exprs) {
      calls <- NULL
      outcome <- tryCatch(
        withCallingHandlers(
          withVisible(eval(expr, envir = .GlobalEnv)),
          warning = on_warning,
          error = function(e) calls <<- user_calls()
        ),
        error = function(e) e,
        interrupt = function(i) i
      )
      if (inherits(outcome, "interrupt")) {
        send_error("KeyboardInterrupt", "interrupted")
        status <- "error"
        break
      }
      if (inherits(outcome, "error")) {
        send_error("ERROR", describe(outcome), traceback_of(outcome, calls))
        status <- "error"
        break
      }
      look_at_plots()
      if (outcome$visible) {
        printed <- tryCatch(paste(utils::capture.output(print(outcome$value)), collapse = "\n"), error = function(e) e)
        if (inherits(printed, "error")) {
          send_error("ERROR", describe(printed), describe(printed))
          status <- "error"
          break
        }
        if (nzchar(printed)) send_text(printed)  # a value whose print() draws (lattice, ggplot2) is its plot alone
      }
    }
    look_at_plots()
    if (!is.null(pending)) show_plot(pending)
    shown <<- current_plot()
    pending <<- NULL
    status
  }

  # The run's variables, and whatever the cell sets, are undone afterwards.
  with_env <- function(assignments, body) {
    saved <- unclass(Sys.getenv())
    on.exit({
      now <- unclass(Sys.getenv())
      gone <- setdiff(names(now), names(saved))
      if (length(gone)) Sys.unsetenv(gone)
      changed <- names(saved)[is.na(now[names(saved)]) | now[names(saved)] != saved]
      if (length(changed)) do.call(Sys.setenv, as.list(saved[changed]))
    })
    if (length(assignments)) {
      names <- sub("=.*", "", assignments)
      values <- lapply(sub("^[^=]*=", "", assignments), unhex)
      do.call(Sys.setenv, stats::setNames(values, names))
    }
    body()
  }

  serve <- function() {
    send("ready")
    repeat {
      line <- tryCatch(readLines(requests, n = 1L), interrupt = function(i) "")
      if (length(line) == 0L) break
      # An interrupt that came between cells is pending until R next checks: spend it
      # here, not on the cell.
      tryCatch(Sys.sleep(0), interrupt = function(i) NULL)
      fields <- strsplit(line, "\t", fixed = TRUE)[[1L]]
      if (length(fields) < 3L || fields[[1L]] != "run") next  # an acknowledgement nobody waited for
      token <<- fields[[2L]]
      status <- tryCatch(
        with_env(fields[-(1:3)], function() run_cell(unhex(fields[[3L]]))),
        error = function(e) {
          send_error("ERROR", describe(e), describe(e))
          "error"
        },
        interrupt = function(i) {
          send_error("KeyboardInterrupt", "interrupted")
          "error"
        }
      )
      # An interrupt held back while "done" was written is spent here, not on the session.
      tryCatch(send("done", status), interrupt = function(i) NULL)
    }
  }
  serve()
})
