#!/bin/sh
# Upper-cases whatever it is sent.
tr '[:lower:]' '[:upper:]'
