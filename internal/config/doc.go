// Package config is the system configuration of a wisp node: the file given
// to `wisp serve --config wisp.yaml` (field names of seed 003 §4.1).
//
// It is loaded once at start-up by the composition root (cmd/wisp), checked
// with Validate, and its sections are handed down to the packages that use
// them: execution and process to the scheduler and the process sandbox,
// container to the container backend, gateway to the HTTP server, store to
// internal/store, log to the logger. No package reads the file or the
// environment on its own; command-line flags are applied by the caller over
// the loaded Config.
//
// Every field has a default (Default), so an empty file, or no file at all,
// is a working configuration. Reference is the annotated example that lists
// every field with its default; the README includes it.
//
// Errors name the file, the line and the key (`config wisp.yaml line 4:
// unknown field "max_concurent_functions" in execution`) and wrap
// errdefs.ErrInvalid with a hint.
package config
