module example.com/harness-go-module

go 1.24
