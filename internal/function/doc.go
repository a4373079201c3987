// Package function defines the function spec users deploy: its YAML/JSON
// form (the field names of seed 003 §4.2, see DESIGN §2), defaults,
// validation with messages that name the field and the fix, and the value
// types (durations, sizes, CPU quantities) the spec uses.
//
// A Spec is pure data; checks that need the function's code (does the
// handler file exist?) are in ValidateCode, and checks that need the server
// (is this execution mode available?) belong to the server.
package function
