from blipflow.cli import main

main()
