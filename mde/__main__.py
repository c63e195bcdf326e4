from mde.cli.app import main

main()
