// Package examples embeds the example functions that `wisp serve --demo`
// deploys and the README walks through. Each directory holds a
// function.yaml and its code, exactly as a user would write them.
package examples

import "embed"

// FS holds every example directory.
//
//go:embed all:hello-python all:hello-node all:shout-exec all:greet-loud
var FS embed.FS

// Names lists the example directories in the order they are deployed.
var Names = []string{"hello-python", "hello-node", "shout-exec", "greet-loud"}
