from costroute.cli import main

main()
